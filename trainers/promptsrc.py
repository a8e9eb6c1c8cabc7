"""PromptSRC: Prompting with Self-Regulating Constraints (Khattak et al., "Self-regulating Prompts:
Foundational Model Adaptation without Forgetting", ICCV 2023, https://arxiv.org/abs/2307.06948).

IVLP's independent deep text and vision prompts (:class:`trainers.ivlp.IVLP`), trained with three
self-regularising terms that keep the prompted model close to the frozen CLIP:

- mutual agreement (L1) between the prompted and frozen features, on the text side
  ``TEXT_LOSS_WEIGHT * mean|t_c - t~_c|`` (t~ the frozen features of the 60 ImageNet templates,
  averaged per class, then normalised) and on the image side
  ``IMAGE_LOSS_WEIGHT * mean|f - f~|`` (f~ the frozen image encoder's feature, no prompts);
- ``KL(softmax(z~) || softmax(z))`` summed over the batch and divided by ``B * C``, between the
  frozen logits ``z~ = s * f~ t~^T`` and the prompted logits ``z = s * f t^T``;

  ``loss = CE(z, y) + KL + L1_text + L1_image``;
- Gaussian prompt aggregation (GPA): after epoch e (1-based) the learned tensors are added to a
  running sum with weight ``w_e = N(e; GPA_MEAN, GPA_STD^2) / sum_k N(k; GPA_MEAN, GPA_STD^2)``
  (k = 1 .. MAX_EPOCH); after the last epoch the prompts are replaced by that sum. Kept
  deviation: only the learned tensors are aggregated. Upstream aggregates the whole model's state
  dict, frozen CLIP weights included, and the weighted sum of identical fp16 copies rounds, so
  its frozen weights drift by up to 2 fp16 ulps; here they stay bit-identical.

The frozen text features are computed once when the model is built, never per step; the frozen
image features need the step's (augmented) images, so they are computed per step, without grad,
by the same CLIP with no prompts (upstream keeps a second copy of the image encoder for this).

Checkpoints (``VLPromptLearner/``, upstream's folder) hold the prompts as they are after the
epoch: the raw prompts for epochs before the last, the GPA-aggregated prompts (what is evaluated)
for the last one, as upstream. Each file also carries the GPA running sum (``gpa``), so a run
resumed from any epoch's checkpoint continues the aggregation exactly; upstream does not save it.
Upstream ``VLPromptLearner/model.pth.tar-<N>`` files (the whole model) load via ``--model-dir``
with IVLP's key mapping; their frozen copy of the image encoder (``prompt_learner.ZS_image_
encoder.*``) is ignored.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP, tokenize
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.engine import CheckpointError
from dassl_lite.registry import TRAINER_REGISTRY

from .deep_prompts import DeepPromptedCLIP
from .imagenet_templates import IMAGENET_TEMPLATES
from .ivlp import IVLP
from .prompting import prompt_classnames

logger = logging.getLogger(__name__)


@register_config_extender("PromptSRC")
def add_promptsrc_config(cfg: CN) -> None:
    """``TRAINER.PROMPTSRC`` with upstream names and defaults."""
    cfg.TRAINER.PROMPTSRC = CN()
    cfg.TRAINER.PROMPTSRC.N_CTX_VISION = 4  # prompt tokens per vision layer
    cfg.TRAINER.PROMPTSRC.N_CTX_TEXT = 4  # prompt tokens per text layer
    cfg.TRAINER.PROMPTSRC.CTX_INIT = "a photo of a"  # initialisation words (text prompts)
    cfg.TRAINER.PROMPTSRC.PREC = "fp16"  # fp16, fp32, amp, bf16
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION = 9  # vision layers with prompts; 0 = none
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT = 9  # text layers with prompts (>= 1)
    cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT = 25  # weight of the text L1 agreement
    cfg.TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT = 10  # weight of the image L1 agreement
    cfg.TRAINER.PROMPTSRC.GPA_MEAN = 15  # mean (epoch) of the Gaussian prompt aggregation
    cfg.TRAINER.PROMPTSRC.GPA_STD = 1  # its standard deviation (epochs)


def gpa_weights(max_epoch: int, mean: float, std: float) -> List[float]:
    """GPA weight of each epoch 1 .. ``max_epoch``: the normal density at the epoch, normalised
    to sum to 1 (upstream ``get_gauss``)."""
    if std <= 0:
        raise ConfigError(f"TRAINER.PROMPTSRC.GPA_STD must be > 0; got {std}")
    density = [math.exp(-0.5 * ((e - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
               for e in range(1, max_epoch + 1)]
    total = sum(density)
    if max_epoch > 0 and total <= 0:
        raise ConfigError(
            f"TRAINER.PROMPTSRC.GPA_MEAN={mean} with GPA_STD={std} gives every one of the "
            f"{max_epoch} epochs a weight of 0 (underflow); put GPA_MEAN within the epochs or "
            f"raise GPA_STD")
    return [d / total for d in density]


@torch.no_grad()
def template_text_features(clip_model: CLIP, classnames: Sequence[str],
                           templates: Sequence[str] = IMAGENET_TEMPLATES) -> Tensor:
    """Frozen class text features [n_cls, E]: per class the mean over ``templates`` of the
    (unnormalised) text features, then normalised, as upstream's ``fixed_embeddings``."""
    names = prompt_classnames(classnames)
    device = clip_model.token_embedding.weight.device
    total: Optional[Tensor] = None
    for template in templates:
        tokens = tokenize([template.replace("{}", n) for n in names],
                          context_length=clip_model.context_length)
        eot_idx = tokens.argmax(dim=-1)
        tokens = tokens[:, :int(eot_idx.max()) + 1].to(device)
        features = clip_model.encode_text_embeddings(clip_model.token_embedding(tokens),
                                                     eot_idx.to(device)).float()
        total = features if total is None else total + features
    mean = total / len(templates)
    return mean / mean.norm(dim=-1, keepdim=True)


def promptsrc_losses(out: Dict[str, Tensor], labels: Tensor, text_weight: float,
                     image_weight: float) -> Dict[str, Tensor]:
    """PromptSRC's loss terms from the outputs of :meth:`PromptSRCCLIP.forward` (features=True):
    ``ce``, ``l1_text``, ``l1_image``, ``kl`` (weighted) and their sum ``loss``."""
    logits, zs_logits = out["logits"].float(), out["zs_logits"].float()
    terms = {
        "ce": F.cross_entropy(logits, labels),
        "l1_text": F.l1_loss(out["text_features"].float(),
                             out["frozen_text_features"].float()) * text_weight,
        "l1_image": F.l1_loss(out["image_features"].float(),
                              out["zs_image_features"].float()) * image_weight,
        "kl": F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(zs_logits, dim=1),
                       reduction="sum", log_target=True) / logits.numel(),
    }
    terms["loss"] = sum(terms.values())
    return terms


class PromptSRCCLIP(DeepPromptedCLIP):
    """IVLP's prompted CLIP plus the frozen template text features (``frozen_text_features``,
    computed once); ``forward(images, features=True)`` also returns what the regularisers need."""

    def __init__(self, clip_model: CLIP, prompt_learner: nn.Module,
                 fixed_text: Optional[Tensor], frozen_text: Tensor):
        super().__init__(clip_model, prompt_learner, fixed_text)
        self.register_buffer("frozen_text_features", frozen_text, persistent=False)

    def forward(self, images: Tensor, features: bool = False):
        """Logits; with ``features`` a dict of the prompted and frozen logits and features.

        Under DataParallel the class text features [C, E] come back once per replica; both text
        tensors repeat alike, so the mean L1 between them is unchanged."""
        if not features:
            return super().forward(images)
        text = self.text_features()
        image = self.image_features(images)
        frozen_text = self.frozen_text_features
        with torch.no_grad():
            zs_image = self.encode_image(images)
            zs_logits = self.logits(zs_image, frozen_text)
        return {"logits": self.logits(image, text), "zs_logits": zs_logits,
                "text_features": text, "frozen_text_features": frozen_text,
                "image_features": image, "zs_image_features": zs_image}


@TRAINER_REGISTRY.register()
class PromptSRC(IVLP):
    """PromptSRC; config section ``TRAINER.PROMPTSRC``; checkpoints in ``VLPromptLearner/``."""

    precision_key = "TRAINER.PROMPTSRC.PREC"
    model_name = "VLPromptLearner"
    upstream_layout = dataclasses.replace(
        IVLP.upstream_layout,
        frozen=IVLP.upstream_layout.frozen + ("prompt_learner.ZS_image_encoder.",))

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        c = cfg.TRAINER.PROMPTSRC
        if c.PROMPT_DEPTH_TEXT < 1:
            raise ConfigError(f"TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT must be >= 1 (PromptSRC learns "
                              f"text prompts); got {c.PROMPT_DEPTH_TEXT}")
        for key in ("TEXT_LOSS_WEIGHT", "IMAGE_LOSS_WEIGHT"):
            if c[key] < 0:
                raise ConfigError(f"TRAINER.PROMPTSRC.{key} must be >= 0; got {c[key]}")
        gpa_weights(cfg.OPTIM.MAX_EPOCH, c.GPA_MEAN, c.GPA_STD)

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> PromptSRCCLIP:
        ivlp = super().build_prompted_clip(clip_model, classnames)
        with self.precision.autocast():
            frozen = template_text_features(clip_model, classnames)
        logger.info(f"PromptSRC: frozen text features of {len(IMAGENET_TEMPLATES)} templates "
                    f"computed once")
        return PromptSRCCLIP(clip_model, ivlp.prompt_learner, ivlp.fixed_text_features,
                             frozen.to(clip_model.dtype))

    def build_model(self) -> None:
        super().build_model()
        c = self.cfg.TRAINER.PROMPTSRC
        self.gpa_weights = gpa_weights(self.max_epoch, c.GPA_MEAN, c.GPA_STD)
        self.gpa_sum: Optional[Dict[str, Tensor]] = None
        logger.info("GPA weights per epoch: " + ", ".join(f"{w:.4f}" for w in self.gpa_weights))

    # ------------------------------------------------------------------ train
    def forward_backward(self, batch: Dict[str, Any]) -> Dict[str, float]:
        images, labels = self.parse_batch_train(batch)
        c = self.cfg.TRAINER.PROMPTSRC
        with self.precision.autocast():
            out = self.model(images, features=True)
            terms = promptsrc_losses(out, labels, c.TEXT_LOSS_WEIGHT, c.IMAGE_LOSS_WEIGHT)
        self.model_backward_and_update(terms["loss"])
        acc = (out["logits"].argmax(dim=1) == labels).float().mean().item() * 100
        return {**{k: v.item() for k, v in terms.items()}, "acc": acc}

    def after_epoch(self) -> None:
        self.aggregate_prompts()
        super().after_epoch()

    def learned_tensors(self) -> Dict[str, nn.Parameter]:
        """The trainable tensors of the registered prompt learner, by name."""
        learner = self._models[self.model_name]
        return {k: p for k, p in learner.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def aggregate_prompts(self) -> None:
        """Add this epoch's prompts with their GPA weight; after the last epoch, load the sum."""
        weight = self.gpa_weights[self.epoch]
        params = self.learned_tensors()
        if self.gpa_sum is None:
            self.gpa_sum = {k: torch.zeros_like(p, dtype=torch.float32) for k, p in params.items()}
        for k, p in params.items():
            self.gpa_sum[k].add_(p.float(), alpha=weight)
        if self.epoch + 1 == self.max_epoch:
            logger.info("Using the GPA-aggregated prompts (Gaussian-weighted over the epochs)")
            for k, p in params.items():
                p.copy_(self.gpa_sum[k])

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_extras(self, name: str) -> Dict[str, Any]:
        if name != self.model_name or self.gpa_sum is None:
            return {}
        return {"gpa": {"epochs": self.epoch + 1,
                        "sum": {k: v.detach().cpu().clone() for k, v in self.gpa_sum.items()}}}

    def restore_checkpoint_extras(self, name: str, ckpt: Dict[str, Any]) -> None:
        if name != self.model_name:
            return
        gpa, epoch = ckpt.get("gpa"), ckpt.get("epoch")
        if gpa is None or gpa.get("epochs") != epoch:
            if epoch is not None and epoch < self.max_epoch:
                raise CheckpointError(
                    f"Cannot resume PromptSRC at epoch {epoch}: the checkpoint has no GPA running "
                    f"sum for its epochs (written by other code?), so the aggregation over "
                    f"epochs 1..{epoch} would be lost; start afresh in a new --output-dir")
            return
        params = self.learned_tensors()
        if set(gpa["sum"]) != set(params):
            raise CheckpointError(f"The checkpoint's GPA sum holds {sorted(gpa['sum'])}; the "
                                  f"model learns {sorted(params)}")
        self.gpa_sum = {k: v.float().to(params[k].device) for k, v in gpa["sum"].items()}
