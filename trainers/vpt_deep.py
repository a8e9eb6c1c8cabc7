"""VPTDeep: deep Visual Prompt Tuning as in the VPT paper (Jia et al., "Visual Prompt Tuning",
ECCV 2022, https://arxiv.org/abs/2203.12119) on a frozen CLIP ViT.

Every layer of the first DEPTH gets its own N_CTX prompt tokens: the set of layer 0 enters with
the patch tokens, the set of layer k replaces the prompt outputs of layer k-1 (VPT-deep). As in
the paper, prompts get no positional embedding and are initialised from uniform(-v, v) with
``v = sqrt(6 / (3 * patch_h * patch_w + prompt_dim))`` (prompt_dim = the ViT width, or PROJECT),
are optionally projected by ``Linear(PROJECT, width)`` (Kaiming-normal, fan-out) and are dropped
out (DROPOUT, per image, training only). The paper puts prompts right after the class token,
``[CLS, P, patches]``; our encoder appends them, ``[CLS, patches, P]``. Without positional
embeddings and without a causal mask, self-attention is permutation-equivariant, so the class
token's output (the only one read) is the same either way. Like CLIP's other tokens, the layer-0
prompts pass through CLIP's ``ln_pre``.

Heads (HEAD):

- ``clip`` (default): the frozen text encoder's features of ``"<CTX_INIT> <name>."`` as the
  classifier (logit_scale * cosine), so unseen class names work (base-to-novel);
- ``linear``: a trained ``Linear(embed_dim, n_cls)`` on the CLIP image feature (the projected
  class token), as the paper's closed-set benchmarks (CUB-200, VTAB) do; it only knows the
  training classes.

Config section ``TRAINER.VPTDEEP``:

- ``N_CTX`` (8): prompt tokens per layer;
- ``DEPTH`` (-1): layers with prompts, -1 = all layers of the ViT, 1 = shallow VPT;
- ``DROPOUT`` (0.1): prompt dropout rate;
- ``PROJECT`` (-1): prompt dimension with a projection to the ViT width; -1 = no projection;
- ``HEAD`` ("clip"): ``clip`` or ``linear``;
- ``CTX_INIT`` ("a photo of a"): words of the fixed text prompt of the ``clip`` head (no
  prompt is learned from it; the VPT paper has no text side);
- ``PREC`` ("fp16"): fp16, fp32, amp, bf16.

Trainable values: N_CTX * d * DEPTH with d the ViT width (or PROJECT, plus PROJECT*width + width
for the projection), plus embed_dim*n_cls + n_cls with the linear head.
"""
from __future__ import annotations

import logging
import math
from typing import List, Optional

import torch
import torch.nn as nn
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.registry import TRAINER_REGISTRY

from .deep_prompts import (DeepPromptedCLIP, DeepPromptTrainer, VisionPrompts, check_depth,
                           vit_layers)

logger = logging.getLogger(__name__)

HEADS = ("clip", "linear")


@register_config_extender("VPTDeep")
def add_vpt_deep_config(cfg: CN) -> None:
    """``TRAINER.VPTDEEP`` (see the module docstring)."""
    cfg.TRAINER.VPTDEEP = CN()
    cfg.TRAINER.VPTDEEP.N_CTX = 8  # prompt tokens per layer
    cfg.TRAINER.VPTDEEP.DEPTH = -1  # layers with prompts; -1 = all
    cfg.TRAINER.VPTDEEP.DROPOUT = 0.1  # prompt dropout
    cfg.TRAINER.VPTDEEP.PROJECT = -1  # prompt dimension projected to the width; -1 = none
    cfg.TRAINER.VPTDEEP.HEAD = "clip"  # clip (text classifier of the class names) or linear
    cfg.TRAINER.VPTDEEP.CTX_INIT = "a photo of a"  # words of the clip head's text prompt
    cfg.TRAINER.VPTDEEP.PREC = "fp16"  # fp16, fp32, amp, bf16


def uniform_init(patch_size: int, prompt_dim: int):
    """The VPT paper's initialiser: uniform(-v, v), v = sqrt(6 / (3 * patch^2 + prompt_dim))."""
    bound = math.sqrt(6.0 / (3 * patch_size * patch_size + prompt_dim))

    def init(*shape: int) -> Tensor:
        return nn.init.uniform_(torch.empty(*shape), -bound, bound)

    return init


def prompt_projection(project: int, width: int) -> Optional[nn.Linear]:
    """``Linear(project, width)`` with the paper's Kaiming-normal (fan-out) weights; None for -1."""
    if project == -1:
        return None
    proj = nn.Linear(project, width)
    nn.init.kaiming_normal_(proj.weight, a=0, mode="fan_out")
    return proj


class VPTDeepPromptLearner(VisionPrompts):
    """Visual prompts (``ctx``, ``deep``, optional ``proj``) plus the optional linear ``head``."""

    def __init__(self, n_ctx: int, depth: int, width: int, patch_size: int, project: int,
                 dropout: float, head: Optional[nn.Linear]):
        proj = prompt_projection(project, width)
        prompt_dim = width if proj is None else project
        super().__init__(n_ctx, depth, width, proj=proj, dropout=dropout,
                         init=uniform_init(patch_size, prompt_dim))
        self.head = head


class LinearHeadCLIP(DeepPromptedCLIP):
    """Logits from the linear head on the (unnormalised) CLIP image feature."""

    def forward(self, images: Tensor) -> Tensor:
        learner = self.prompt_learner
        features = self.clip.visual(images, **learner.vision_inputs(images.shape[0]))
        return learner.head(features.to(learner.head.weight.dtype))


@TRAINER_REGISTRY.register()
class VPTDeep(DeepPromptTrainer):
    """Deep visual prompt tuning (VPT paper); config section ``TRAINER.VPTDEEP``; checkpoints in
    ``prompt_learner/``."""

    precision_key = "TRAINER.VPTDEEP.PREC"
    model_name = "prompt_learner"
    cache_text_in_eval = False  # the clip head's text features are fixed at build time

    def check_cfg(self, cfg) -> None:
        c = cfg.TRAINER.VPTDEEP
        if c.HEAD not in HEADS:
            raise ConfigError(f"TRAINER.VPTDEEP.HEAD must be one of {', '.join(HEADS)}; "
                              f"got {c.HEAD!r}")
        if c.DEPTH == 0 or c.DEPTH < -1:
            raise ConfigError(f"TRAINER.VPTDEEP.DEPTH must be -1 (all layers) or >= 1; "
                              f"got {c.DEPTH}")
        if c.N_CTX < 1:
            raise ConfigError(f"TRAINER.VPTDEEP.N_CTX must be >= 1; got {c.N_CTX}")
        if not 0 <= c.DROPOUT < 1:
            raise ConfigError(f"TRAINER.VPTDEEP.DROPOUT must lie in [0, 1); got {c.DROPOUT}")
        if c.PROJECT != -1 and c.PROJECT < 1:
            raise ConfigError(f"TRAINER.VPTDEEP.PROJECT must be -1 (no projection) or >= 1; "
                              f"got {c.PROJECT}")

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> DeepPromptedCLIP:
        c = self.cfg.TRAINER.VPTDEEP
        layers = vit_layers(clip_model, "VPTDeep", self.cfg.MODEL.BACKBONE.NAME)
        depth = layers if c.DEPTH == -1 else c.DEPTH
        check_depth("TRAINER.VPTDEEP.DEPTH", depth, layers, "vision encoder")
        visual = clip_model.visual
        head = nn.Linear(visual.output_dim, len(classnames)) if c.HEAD == "linear" else None
        learner = VPTDeepPromptLearner(c.N_CTX, depth, visual.width, visual.patch_size,
                                       c.PROJECT, c.DROPOUT, head)
        logger.info(f"VPTDeep: {c.N_CTX} prompt tokens in {depth} of {layers} layers, dropout "
                    f"{c.DROPOUT}, projection {c.PROJECT}, head {c.HEAD}")
        if head is not None:
            return LinearHeadCLIP(clip_model, learner)
        return DeepPromptedCLIP(clip_model, learner, self.fixed_text(clip_model, classnames))
