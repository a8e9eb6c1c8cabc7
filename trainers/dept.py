"""DePT: Decoupled Prompt Tuning (Zhang et al., CVPR 2024, https://arxiv.org/abs/2309.07439;
code: Koorye/DePT), the channel-adjusted transfer (CAT) head on top of a base prompt learner.

``--trainer DePT TRAINER.DEPT.BASE <base>`` composes the head with a registered base trainer
(:data:`DEPT_BASES`: CoOp, MaPLe; upstream ``ExtrasLinearProbeCoOp``, ``ExtrasLinearProbeMaPLe``)
through :func:`dept_trainer`, a mixin over the base's own class: the base builds its prompted
CLIP, prompts and config section (``TRAINER.COOP``, ``TRAINER.MAPLE``) as usual; DePT adds

- ``film_lp_img``, ``film_lp_text``: channel-wise affine maps ``scale * x + bias`` (init 1, 0;
  upstream ``FiLM``) of the *unnormalised* image and class text features (``TRAINER.FILM.
  LINEAR_PROBE``; False: identity);
- ``linear_probe_proj``: ``Linear(E, n_cls)`` (``TRAINER.LINEAR_PROBE.TYPE`` "linear"; with
  "similarity" the head's logits are ``logit_scale * cos`` of the FiLM-ed features instead).

Training (base classes): the head sees the FiLM-ed image features and the FiLM-ed text
features of the images' classes, both labelled with the class, and

    loss = (1 - W) * CE(base logits, y) + W * CE(head logits of [text[y]; image], [y; y])

with ``W = TRAINER.LINEAR_PROBE.WEIGHT`` (0.7). Inference on the base classes (SUBSAMPLE_CLASSES
"base", or "all" on an ImageNet* dataset: upstream's rule) gives ``(1 - W) * base logits + W *
head logits`` (``TEST_TIME_FUSION``; False: head logits); on other classes the base logits
alone (the head knows only the base classes; a checkpoint's ``linear_probe_proj`` is then
ignored, as upstream). The prompts train at ``OPTIM.LR``, the head at ``OPTIM.LR *
OPTIM.LR_EXP`` (6.5), upstream's staged learning rate.

Config (upstream names and defaults): ``TRAINER.LINEAR_PROBE`` (TYPE, WEIGHT,
TEST_TIME_FUSION), ``TRAINER.FILM.LINEAR_PROBE``, ``OPTIM.LR_EXP``, ``TRAINER.NAMES_TO_UPDATE``
(upstream's default only), plus ``TRAINER.DEPT.BASE`` (ours: upstream has one trainer name per
base). Checkpoints in ``PromptLearner/`` (upstream's folder): the base's prompt tensors under
``prompt_learner.`` and the head; upstream files (the whole model) load via ``--model-dir``.

Deliberate deviations: upstream switches on the staged learning rate through global OPTIM
defaults (STAGED_LR True, BASE_LR_MULT 1.0, NEW_LAYERS linear_probe/film) that would change every
other trainer here; DePT builds the same two groups itself and refuses ``OPTIM.STAGED_LR True``.
Upstream trains the head in fp16 under ``PREC fp16``; here the head's weights stay float32
and its input features are cast to float32 (as every trainable tensor here). Training on
SUBSAMPLE_CLASSES "all" outside ImageNet is refused with a message (upstream fails an assert).
ImageNet-A/R class clipping of the head (upstream ``load_model``) is not ported.

Checked against upstream's code (fp32, CPU, identical weights, class names, images and config;
ToyCLIP and a 2-layer ViT-B/16-shaped CLIP): the base and head logits, the fused evaluation
logits, ``ce``, ``ce_lp``, ``loss`` and the gradients of every trainable tensor agree to 4e-6, a
20-step SGD curve to 1e-6, and an upstream-written ``PromptLearner`` file (the whole model) loads
to the same logits. Over MaPLe this needs upstream's ``.half()`` casts of the prompts patched to
the run's dtype: in an fp32 run upstream rounds MaPLe's prompts to fp16 (logits then differ by
up to 2e-4 at logit scale 100).
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.registry import TRAINER_REGISTRY

from .clip_trainer import ClipPromptTrainer
from .deep_prompts import UpstreamLayout
from .prompting import PromptedCLIP, unnormalised

logger = logging.getLogger(__name__)

DEPT_BASES = ("CoOp", "MaPLe")  # base trainers DePT composes with (checked against upstream)
HEAD_TYPES = ("linear", "similarity")
UPSTREAM_NAMES_TO_UPDATE = ["prompt_learner", "linear_probe", "film"]


@register_config_extender("DePT")
def add_dept_config(cfg: CN) -> None:
    """Upstream DePT's keys (``train.py`` ``extend_cfg``) and ``TRAINER.DEPT.BASE``."""
    cfg.TRAINER.DEPT = CN()
    cfg.TRAINER.DEPT.BASE = "CoOp"  # the base trainer: one of DEPT_BASES
    if "LINEAR_PROBE" not in cfg.TRAINER:  # LinearProbeCLIP's section too (other keys)
        cfg.TRAINER.LINEAR_PROBE = CN()
    cfg.TRAINER.LINEAR_PROBE.TYPE = "linear"  # linear or similarity
    cfg.TRAINER.LINEAR_PROBE.WEIGHT = 0.7  # weight of the head in the loss and at test time
    cfg.TRAINER.LINEAR_PROBE.TEST_TIME_FUSION = True  # base classes: fuse both logits
    cfg.TRAINER.FILM = CN()
    cfg.TRAINER.FILM.LINEAR_PROBE = True  # channel-wise affine maps before the head
    cfg.TRAINER.NAMES_TO_UPDATE = list(UPSTREAM_NAMES_TO_UPDATE)
    cfg.OPTIM.LR_EXP = 6.5  # the head's learning rate is OPTIM.LR * LR_EXP


class FiLM(nn.Module):
    """``scale * x + bias`` per channel (upstream's module and parameter names)."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale.to(x.dtype) * x + self.bias.to(x.dtype)


class DePTLearner(nn.Module):
    """What DePT trains and checkpoints: the base's ``prompt_learner`` and the CAT head."""

    def __init__(self, prompt_learner: nn.Module, dim: int, n_cls: int, film: bool, head: bool,
                 head_type: str):
        super().__init__()
        self.prompt_learner = prompt_learner
        self.film_lp_img = FiLM(dim) if film else nn.Identity()
        self.film_lp_text = FiLM(dim) if film else nn.Identity()
        self.linear_probe_proj = (nn.Linear(dim, n_cls) if head and head_type == "linear"
                                  else nn.Identity())


def dept_losses(out: Dict[str, Tensor], labels: Tensor, weight: float) -> Dict[str, Tensor]:
    """``ce`` (base logits), ``ce_lp`` (head logits) and ``loss = (1-W) ce + W ce_lp``."""
    terms = {"ce": F.cross_entropy(out["logits"].float(), labels),
             "ce_lp": F.cross_entropy(out["logits_lp"].float(), out["labels_lp"])}
    terms["loss"] = (1 - weight) * terms["ce"] + weight * terms["ce_lp"]
    return terms


class DePTCLIP(nn.Module):
    """A base prompted CLIP with DePT's head. ``forward(images)``: the logits to evaluate;
    ``forward(images, labels)``: a dict of ``logits``, ``logits_lp`` and ``labels_lp``."""

    def __init__(self, base: PromptedCLIP, learner: DePTLearner, head: bool, head_type: str,
                 weight: float, fusion: bool):
        super().__init__()
        self.base = base
        self.learner = learner
        self.head, self.head_type, self.weight, self.fusion = head, head_type, weight, fusion
        self.register_buffer("text_cache", None, persistent=False)

    @property
    def clip(self) -> CLIP:
        return self.base.clip

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    def raw_text_features(self) -> Tensor:
        """Class text features [n_cls, E] before normalisation."""
        with unnormalised(self.base):
            return self.base.text_features()

    def cache_text_features(self) -> None:
        self.text_cache = self.raw_text_features().detach()

    def clear_text_cache(self) -> None:
        self.text_cache = None

    def encode_image(self, images: Tensor) -> Tensor:
        """Image features [B, E] before the normalisation (what the feature cache stores for
        DePT and :meth:`forward` takes in place of images)."""
        with unnormalised(self.base):
            return self.base.encode_image(images)

    @staticmethod
    def _normalised(x: Tensor) -> Tensor:
        return x / x.norm(dim=-1, keepdim=True)

    def similarity(self, image: Tensor, text: Tensor) -> Tensor:
        return self.base.logits(self._normalised(image), self._normalised(text))

    def head_logits(self, image: Tensor, text: Tensor,
                    labels: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
        """The CAT head's logits; in training (``labels``) of ``[text[labels]; image]``."""
        image = self.learner.film_lp_img(image.float())
        text = self.learner.film_lp_text(text.float())
        if self.head_type == "similarity":
            return self.similarity(image, text), labels
        if labels is None:
            return self.learner.linear_probe_proj(image), None
        feats = torch.cat([text[labels], image])
        return self.learner.linear_probe_proj(feats), torch.cat([labels, labels])

    def forward(self, images: Tensor, labels: Optional[Tensor] = None):
        text = self.text_cache if self.text_cache is not None else self.raw_text_features()
        with unnormalised(self.base):
            image = self.base.image_features(images)
        logits = self.similarity(image, text)
        if labels is not None:
            if not self.head:
                raise ConfigError(
                    "DePT trains its head on the classes it is evaluated on: train with "
                    "DATASET.SUBSAMPLE_CLASSES base (or all on an ImageNet dataset), as upstream")
            logits_lp, labels_lp = self.head_logits(image, text, labels)
            return {"logits": logits, "logits_lp": logits_lp, "labels_lp": labels_lp}
        if not self.head:
            return logits
        logits_lp, _ = self.head_logits(image, text, None)
        if not self.fusion:
            return logits_lp
        return (1 - self.weight) * logits + self.weight * logits_lp


class DePTMixin:
    """DePT over the base trainer class that follows it in the MRO (see :func:`dept_trainer`)."""

    model_name = "PromptLearner"  # upstream's checkpoint folder
    # The head reads unnormalised image features: with a base whose image encoder is frozen and
    # unprompted (CoOp; the base's prompted_image_encoder), those are cached (not MaPLe's).
    cached_features = "unnormalised"

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        lp = cfg.TRAINER.LINEAR_PROBE
        if lp.TYPE not in HEAD_TYPES:
            raise ConfigError(f"TRAINER.LINEAR_PROBE.TYPE must be one of {', '.join(HEAD_TYPES)}; "
                              f"got {lp.TYPE!r}")
        if not 0 <= lp.WEIGHT <= 1:
            raise ConfigError(f"TRAINER.LINEAR_PROBE.WEIGHT must lie in [0, 1]; got {lp.WEIGHT}")
        if list(cfg.TRAINER.NAMES_TO_UPDATE) != UPSTREAM_NAMES_TO_UPDATE:
            raise ConfigError(f"TRAINER.NAMES_TO_UPDATE {list(cfg.TRAINER.NAMES_TO_UPDATE)}: DePT "
                              f"trains the base's prompts and its head, upstream's default "
                              f"{UPSTREAM_NAMES_TO_UPDATE}; other values are not supported")
        if cfg.OPTIM.STAGED_LR:
            raise ConfigError("OPTIM.STAGED_LR True: DePT builds its own two learning-rate groups "
                              "(prompts at OPTIM.LR, head at OPTIM.LR * OPTIM.LR_EXP); set "
                              "OPTIM.STAGED_LR False")
        if cfg.OPTIM.LR_EXP <= 0:
            raise ConfigError(f"OPTIM.LR_EXP must be > 0; got {cfg.OPTIM.LR_EXP}")

    @property
    def head_mode(self) -> bool:
        """Whether the classes are those the head is trained on (upstream's rule)."""
        sub, name = self.cfg.DATASET.SUBSAMPLE_CLASSES, self.cfg.DATASET.NAME
        return sub == "base" or (sub == "all" and "ImageNet" in name)

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> DePTCLIP:
        base = super().build_prompted_clip(clip_model, classnames)
        lp = self.cfg.TRAINER.LINEAR_PROBE
        dim = clip_model.text_projection.shape[1]
        learner = DePTLearner(base.prompt_learner, dim, len(classnames),
                              self.cfg.TRAINER.FILM.LINEAR_PROBE, self.head_mode, lp.TYPE)
        logger.info(f"DePT over {type(self).__mro__[2].__name__}: CAT head "
                    f"({lp.TYPE}, weight {lp.WEIGHT}) "
                    f"{'used' if self.head_mode else 'not used (classes it was not trained on)'}")
        return DePTCLIP(base, learner, self.head_mode, lp.TYPE, lp.WEIGHT, lp.TEST_TIME_FUSION)

    def trainable_module(self) -> nn.Module:
        return self.model.learner

    def param_groups(self, learner: nn.Module) -> List[Dict[str, Any]]:
        lr = self.cfg.OPTIM.LR
        head = [p for name, m in learner.named_children() if name != "prompt_learner"
                for p in m.parameters()]
        return [{"params": list(learner.prompt_learner.parameters()), "lr": lr},
                {"params": head, "lr": lr * self.cfg.OPTIM.LR_EXP}]

    def forward_backward(self, batch: Dict[str, Any]) -> Dict[str, float]:
        images, labels = self.parse_batch_train(batch)
        with self.precision.autocast():
            out = self.model(images, labels)
            terms = dept_losses(out, labels, self.cfg.TRAINER.LINEAR_PROBE.WEIGHT)
        self.model_backward_and_update(terms["loss"])
        acc = (out["logits"].argmax(dim=1) == labels).float().mean().item() * 100
        return {**{k: v.item() for k, v in terms.items()}, "acc": acc}

    def remap_checkpoint_state(self, name: str,
                               state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Upstream files hold the whole model: keep the prompt tensors (stacked as the base
        stacks them) and the head; drop frozen CLIP keys; outside head mode drop the head."""
        base_layout = getattr(self, "upstream_layout", None)
        stacks = tuple((p, s, "prompt_learner." + t) for p, s, t in base_layout.stacks) \
            if base_layout is not None else ()
        layout = UpstreamLayout(stacks=stacks, markers=("image_encoder.", "text_encoder.",
                                                        "logit_scale"))
        if layout.matches(state_dict):
            state_dict = layout.remap(state_dict)
        if not self.head_mode:
            unused = [k for k in state_dict if k.startswith("linear_probe_proj.")]
            if unused:
                logger.info(f"Ignoring the checkpoint's head {unused}: these classes are not the "
                            f"ones it was trained on")
            state_dict = {k: v for k, v in state_dict.items() if k not in unused}
        return state_dict


@functools.lru_cache(maxsize=None)
def dept_trainer(base: type) -> type:
    """The trainer class of DePT over ``base`` (a ClipPromptTrainer class)."""
    sections = ("DEPT", "LINEAR_PROBE", "FILM", base.precision_key.split(".")[1])
    return type(f"DePT{base.__name__}", (DePTMixin, base),
                {"config_sections": sections, "__module__": __name__,
                 "__doc__": f"DePT over {base.__name__} (see trainers.dept)."})


@TRAINER_REGISTRY.register()
class DePT(ClipPromptTrainer):
    """Decoupled Prompt Tuning over ``TRAINER.DEPT.BASE``; building it gives an instance of
    :func:`dept_trainer` of that base."""

    precision_key = "TRAINER.COOP.PREC"  # the default base's; the instance uses its base's
    config_sections = ("DEPT", "LINEAR_PROBE", "FILM", "COOP", "MAPLE")

    def __new__(cls, cfg, *args, **kwargs):
        base = cfg.TRAINER.DEPT.BASE
        if base not in DEPT_BASES:
            raise ConfigError(f"TRAINER.DEPT.BASE must be one of {', '.join(DEPT_BASES)}; "
                              f"got {base!r}")
        composed = dept_trainer(TRAINER_REGISTRY.get(base))
        trainer = composed.__new__(composed)
        trainer.__init__(cfg, *args, **kwargs)
        return trainer
