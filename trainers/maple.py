"""MaPLe: Multi-modal Prompt Learning (Khattak et al., CVPR 2023, https://arxiv.org/abs/2210.03117).

Text context vectors ``ctx`` [n_ctx, d_t] enter the text encoder after SOS (the rest of CTX_INIT,
the class name and "." stay fixed). The vision encoder gets the *coupled* context ``proj(ctx)``
(one ``Linear(d_t, d_v)``) appended to its tokens. For depth J, layers 1 .. J-1 of both encoders
get new prompts that replace the previous layer's prompt tokens: text prompt
``compound_prompts_text[k]`` [n_ctx, d_t] and its own projection
``compound_prompt_projections[k](compound_prompts_text[k])`` [n_ctx, d_v] for the vision side.
Everything but the prompt learner is frozen.

CTX_INIT rule (upstream ``trainers/maple.py``): when CTX_INIT is set and N_CTX <= 4, the context
is the embedding of the first N_CTX *BPE tokens* of CTX_INIT and the rest of the init text stays
fixed ("a photo of a", N_CTX 2: learns "a" "photo", keeps "of a"); otherwise N(0, 0.02).

Trainable values: n_ctx*d_t + (d_t*d_v + d_v) + (J-1)*n_ctx*d_t + (J-1)*(d_t*d_v + d_v).

Differences from upstream (same numerics): widths come from the backbone (no 512/768), no
``.half()``/``.cuda()``, the deep text prompts are one parameter [J-1, n_ctx, d_t] instead of a
``ParameterList`` (which DataParallel replicas lose), and class text features are computed once
per evaluation. Upstream ``MultiModalPromptLearner/model.pth.tar-<N>`` files load via
``--model-dir`` (their ``prompt_learner.compound_prompts_text.<i>`` are stacked).
"""
from __future__ import annotations

import copy
import logging
from typing import Dict, List, Sequence

import torch.nn as nn
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.registry import TRAINER_REGISTRY

from .deep_prompts import (DeepPromptedCLIP, DeepPromptTrainer, DeepTextPromptLearner,
                           UpstreamLayout, vit_layers)

logger = logging.getLogger(__name__)


@register_config_extender("MaPLe")
def add_maple_config(cfg: CN) -> None:
    """``TRAINER.MAPLE`` with upstream names and defaults."""
    cfg.TRAINER.MAPLE = CN()
    cfg.TRAINER.MAPLE.N_CTX = 2  # number of context vectors (text and vision)
    cfg.TRAINER.MAPLE.CTX_INIT = "a photo of a"  # initialisation words (first N_CTX are learned)
    cfg.TRAINER.MAPLE.PREC = "fp16"  # fp16, fp32, amp, bf16
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = 9  # J: layers with prompts; 1 = shallow MaPLe


class MultiModalPromptLearner(DeepTextPromptLearner):
    """MaPLe's prompts (upstream class and key names): ``ctx``, ``proj``,
    ``compound_prompts_text`` [J-1, n_ctx, d_t], ``compound_prompt_projections.<k>``."""

    def __init__(self, clip_model: CLIP, classnames: Sequence[str], n_ctx: int, ctx_init: str,
                 depth: int):
        super().__init__(clip_model, classnames, n_ctx, ctx_init, depth,
                         deep_name="compound_prompts_text")
        d_t, d_v = clip_model.transformer.width, clip_model.visual.width
        self.proj = nn.Linear(d_t, d_v)
        # Upstream clones one initialised layer, so all deep projections start equal.
        layer = nn.Linear(d_t, d_v)
        self.compound_prompt_projections = nn.ModuleList(
            [copy.deepcopy(layer) for _ in range(depth - 1)])
        logger.info(f"MaPLe: {self.n_ctx} context tokens, prompt depth {depth} "
                    f"(text width {d_t} -> vision width {d_v})")

    def vision_inputs(self, batch: int) -> Dict[str, object]:
        """Shared context ``proj(ctx)`` and the projected deep prompts, for ``clip.visual``."""
        deep: List = [layer(p) for layer, p in
                      zip(self.compound_prompt_projections, self.deep_text_prompts())]
        return {"prompts": self.proj(self.ctx), "deep_prompts": deep}


@TRAINER_REGISTRY.register()
class MaPLe(DeepPromptTrainer):
    """Multi-modal Prompt Learning; config section ``TRAINER.MAPLE``; checkpoints in
    ``MultiModalPromptLearner/`` (upstream's folder)."""

    precision_key = "TRAINER.MAPLE.PREC"
    model_name = "MultiModalPromptLearner"
    upstream_layout = UpstreamLayout(
        stacks=(("prompt_learner.compound_prompts_text.{i}", 0, "compound_prompts_text"),),
        renames=(("prompt_learner.", ""),),
    )

    def check_cfg(self, cfg) -> None:
        if cfg.TRAINER.MAPLE.N_CTX < 1:
            raise ConfigError(f"TRAINER.MAPLE.N_CTX must be >= 1; got {cfg.TRAINER.MAPLE.N_CTX}")

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> DeepPromptedCLIP:
        c = self.cfg.TRAINER.MAPLE
        self.check_prompt_depth(clip_model, c.PROMPT_DEPTH)
        learner = MultiModalPromptLearner(clip_model, classnames, c.N_CTX, c.CTX_INIT,
                                          c.PROMPT_DEPTH)
        return DeepPromptedCLIP(clip_model, learner)

    def check_prompt_depth(self, clip_model: CLIP, depth: int) -> None:
        """1 <= J <= the layer count of both encoders."""
        if depth < 1:
            raise ConfigError(f"TRAINER.MAPLE.PROMPT_DEPTH must be >= 1 (1 = shallow MaPLe); "
                              f"got {depth}")
        backbone = self.cfg.MODEL.BACKBONE.NAME
        n_vision = vit_layers(clip_model, "MaPLe", backbone)
        n_text = clip_model.transformer.layers
        if depth > min(n_text, n_vision):
            raise ConfigError(
                f"TRAINER.MAPLE.PROMPT_DEPTH={depth} exceeds the layers of backbone "
                f"{backbone!r} (text encoder {n_text}, vision encoder {n_vision}); use at most "
                f"{min(n_text, n_vision)}")
