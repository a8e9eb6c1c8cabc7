"""ProGrad: Prompt-aligned Gradient (Zhu et al., "Prompt-aligned Gradient for Prompt Tuning",
ICCV 2023, https://arxiv.org/abs/2205.14865; code: BeierZhu/Prompt-align).

CoOp's prompt (:class:`trainers.coop.CoOp`) trained so that a step never increases the
disagreement with zero-shot CLIP. Two losses from one forward pass:

    xe_loss = CE(logits, y)
    kl_loss = mean_b sum_c -softmax(z_zs / T)_c * log_softmax(z / T)_c * T^2

where ``z_zs`` are the logits of the frozen CLIP with the dataset's hand-written prompt
(:data:`PROGRAD_TEMPLATES`, upstream's ``CUSTOM_TEMPLATES``). For every trainable tensor, with
``g`` the gradient of ``xe_loss`` and ``g_kl`` that of ``kl_loss``: when ``cos(g, g_kl) < 0``
the step uses ``g - LAMBDA * (g . g_kl / |g_kl|) g_kl / |g_kl|`` (the conflicting component
removed), else ``g``. The two gradients come from the trainer template's
:meth:`~dassl_lite.engine.base.TrainerBase.model_backward_each_and_update`; this class only
supplies the rule (:meth:`ProGrad.combine_gradients`).

Config (upstream names): CoOp's section ``TRAINER.COOP`` and the top-level ``LOSS`` section
(``NAME`` "prograd", ``T`` 1.0, ``LAMBDA`` 1.0; ``GM`` and ``ALPHA`` exist so upstream YAMLs merge
and are unused, as upstream). Upstream's ``TRAINER.COOP.CTX_INIT: True`` merges as the string
:data:`DATASET_TEMPLATE`: the context is then the words of the dataset's hand-written prompt
without ``" {}."`` placed after ``N_CTX - n_words`` zero vectors (upstream's layout: with N_CTX 16
and "a photo of a", 12 zero vectors and "a photo of" learned, the last "a" fixed before the
name). Checkpoints are CoOp's (``prompt_learner/``), upstream files load via ``--model-dir``.

Deliberate deviations (the numbers otherwise agree to float32 rounding):
- The zero-shot logits reuse the image features of the prompted model (the image encoder is
  frozen and unprompted, so they are the same); upstream encodes each image twice, once more
  with a float32 copy of CLIP. Under fp16 the zero-shot text features are computed in the run's
  precision here.
- Other CTX_INIT words are honoured with the same layout (upstream replaces any non-empty
  CTX_INIT by the dataset's template).
- ``PREC amp`` trains (upstream's amp branch passes a tuple to the grad scaler and fails); the
  projection is scale-invariant, so scaled gradients project alike.
- The loss is checked for NaN/inf per term, as every trainer here.

Checked against upstream's code (fp32, CPU, identical ToyCLIP weights, class names, images and
config; upstream patched only to read these weights and to know the toy datasets' prompt):
logits, zero-shot logits, both loss terms and the projected gradient agree to 7e-6, a 20-step
SGD curve (18 of 20 steps projected) to 2e-6, and an upstream-written ``prompt_learner`` file
loads to the same logits (3e-6).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP
from dassl_lite.config import ConfigError, register_bool_spelling, register_config_extender
from dassl_lite.registry import TRAINER_REGISTRY

from .coop import CoOp, CoOpCLIP
from .prompting import PromptLearner, init_context_embeddings, init_words
from .zsclip import ZeroshotCLIPModel, dataset_template

logger = logging.getLogger(__name__)

# What upstream's ``TRAINER.COOP.CTX_INIT: True`` merges as: "the dataset's hand-written prompt".
DATASET_TEMPLATE = "<dataset template>"
register_bool_spelling("TRAINER.COOP.CTX_INIT", DATASET_TEMPLATE, "")

# Upstream ProGrad's hand-written prompts (``trainers/prograd.py``, CUSTOM_TEMPLATES): the
# zero-shot teacher and, with CTX_INIT True, the initial context; only those that differ from
# CoOp's (EuroSAT, StanfordCars, SUN397, Caltech101, UCF101, ImageNet*: the same). Others: CoOp's.
PROGRAD_TEMPLATES = {
    "OxfordPets": "a type of pet, a photo of a {}.",
    "OxfordFlowers": "a type of flower, a photo of a {}.",
    "FGVCAircraft": "a type of aircraft, a photo of a {}.",
    "DescribableTextures": "a texture of {}.",
    "DTD": "a texture of {}.",
    "Food101": "a type of food, a photo of {}.",
}


@register_config_extender("ProGrad")
def add_prograd_config(cfg: CN) -> None:
    """The top-level ``LOSS`` section of upstream ProGrad's ``train.py`` (names and defaults)."""
    cfg.LOSS = CN()
    cfg.LOSS.GM = False  # unused (upstream too)
    cfg.LOSS.NAME = ""  # "prograd" (upstream refuses anything else for ProGrad)
    cfg.LOSS.ALPHA = 0.0  # unused (upstream too)
    cfg.LOSS.T = 1.0  # distillation temperature
    cfg.LOSS.LAMBDA = 1.0  # how much of the conflicting component is removed


def prograd_losses(logits: Tensor, zs_logits: Tensor, labels: Tensor,
                   temperature: float) -> Dict[str, Tensor]:
    """``xe_loss`` (cross-entropy) and ``kl_loss`` (soft cross-entropy to the zero-shot
    distribution at temperature T, times T^2), as upstream's ``ProGradLoss``."""
    t = temperature
    teacher = F.softmax(zs_logits.float() / t, dim=-1)
    kl = (-teacher * F.log_softmax(logits.float() / t, dim=-1)).sum(1).mean() * (t * t)
    return {"xe_loss": F.cross_entropy(logits.float(), labels), "kl_loss": kl}


def project_conflict(g: Tensor, g_ref: Tensor, lam: float) -> Tensor:
    """``g`` minus ``lam`` times its component along ``g_ref`` when the two point apart
    (negative cosine); else ``g``. A zero ``g`` or ``g_ref`` leaves ``g`` (upstream: NaN
    cosine, no projection)."""
    ref_norm = torch.linalg.vector_norm(g_ref)
    if ref_norm == 0 or torch.linalg.vector_norm(g) == 0:
        return g
    unit = g_ref / ref_norm
    dot = torch.dot(g.flatten(), unit.flatten())
    return g - lam * dot * unit if dot < 0 else g


class ProGradPromptLearner(PromptLearner):
    """CoOp's prompt learner with upstream ProGrad's initial context: the CTX_INIT words'
    embeddings after ``N_CTX - n_words`` zero vectors (one shared context, as upstream)."""

    def init_context(self, clip_model: CLIP, n_ctx: int, ctx_init: str,
                     csc: bool) -> Tuple[Tensor, str]:
        if not ctx_init:
            return super().init_context(clip_model, n_ctx, ctx_init, csc)
        n_words = len(init_words(ctx_init))
        if n_ctx < n_words:
            raise ConfigError(f"TRAINER.COOP.N_CTX ({n_ctx}) must be >= the {n_words} words of "
                              f"the initial context {ctx_init!r} (upstream ProGrad's rule)")
        ctx = torch.zeros(n_ctx, clip_model.transformer.width)
        ctx[n_ctx - n_words:] = init_context_embeddings(clip_model, ctx_init, n_words)
        return ctx, " ".join(["X"] * (n_ctx - n_words) + [ctx_init])


class ProGradCLIP(CoOpCLIP):
    """CoOp's CLIP plus the frozen hand-written class text features ``zs_text_features``;
    ``forward(images, features=True)`` gives the logits and the zero-shot logits."""

    def __init__(self, clip_model: CLIP, prompt_learner: PromptLearner, zs_text: Tensor):
        super().__init__(clip_model, prompt_learner)
        self.register_buffer("zs_text_features", zs_text, persistent=False)

    def forward(self, images: Tensor, features: bool = False):
        if not features:
            return super().forward(images)
        image = self.image_features(images)
        with torch.no_grad():
            zs_logits = self.logits(image, self.zs_text_features)
        return {"logits": self.logits(image, self.text_features()), "zs_logits": zs_logits}


@TRAINER_REGISTRY.register()
class ProGrad(CoOp):
    """Prompt-aligned Gradient; config sections ``TRAINER.COOP`` and ``LOSS``; checkpoints in
    ``prompt_learner/``."""

    precision_key = "TRAINER.COOP.PREC"

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        if cfg.LOSS.NAME != "prograd":
            raise ConfigError(f"ProGrad needs LOSS.NAME 'prograd' (upstream's only loss for it); "
                              f"got {cfg.LOSS.NAME!r}")
        if cfg.LOSS.T <= 0:
            raise ConfigError(f"LOSS.T must be > 0; got {cfg.LOSS.T}")
        if cfg.LOSS.LAMBDA < 0:
            raise ConfigError(f"LOSS.LAMBDA must be >= 0; got {cfg.LOSS.LAMBDA}")

    def handcrafted_template(self) -> str:
        """The dataset's hand-written prompt as upstream ProGrad writes it."""
        name = self.cfg.DATASET.NAME
        return PROGRAD_TEMPLATES.get(name) or dataset_template(name)

    def context_init(self) -> str:
        """CTX_INIT as the prompt learner takes it: the template's words for
        :data:`DATASET_TEMPLATE` (upstream ``CTX_INIT: True``)."""
        ctx_init = self.section.CTX_INIT
        if ctx_init != DATASET_TEMPLATE:
            return ctx_init
        words = self.handcrafted_template().replace(" {}.", "")
        logger.info(f"CTX_INIT True: the context starts from {words!r} (the dataset's prompt)")
        return words

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> ProGradCLIP:
        c = self.section
        learner = ProGradPromptLearner(clip_model, classnames, n_ctx=c.N_CTX,
                                       ctx_init=self.context_init(), csc=c.CSC,
                                       class_token_position=c.CLASS_TOKEN_POSITION)
        with torch.no_grad(), self.precision.autocast():
            zs_text = ZeroshotCLIPModel(clip_model, classnames,
                                        [self.handcrafted_template()]).fixed_text_features
        return ProGradCLIP(clip_model, learner, zs_text)

    def combine_gradients(self, grads: Mapping[str, List[Optional[Tensor]]],
                          params: List[nn.Parameter]) -> List[Optional[Tensor]]:
        """The cross-entropy gradient with its component against the KL gradient removed,
        per tensor (upstream ``prograd_backward_and_update``)."""
        lam = self.cfg.LOSS.LAMBDA
        return [g if g is None or g_kl is None else project_conflict(g, g_kl, lam)
                for g, g_kl in zip(grads["xe_loss"], grads["kl_loss"])]

    def forward_backward(self, batch: Dict[str, Any]) -> Dict[str, float]:
        images, labels = self.parse_batch_train(batch)
        with self.precision.autocast():
            out = self.model(images, features=True)
            terms = prograd_losses(out["logits"], out["zs_logits"], labels, self.cfg.LOSS.T)
        # upstream's order: the KL gradient first, then the cross-entropy's
        self.model_backward_each_and_update({"kl_loss": terms["kl_loss"],
                                             "xe_loss": terms["xe_loss"]})
        acc = (out["logits"].argmax(dim=1) == labels).float().mean().item() * 100
        # "loss": the objective (cross-entropy); kl_loss only steers its gradient
        return {"loss": terms["xe_loss"].item(), **{k: v.item() for k, v in terms.items()},
                "acc": acc}
