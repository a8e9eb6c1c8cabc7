"""CLIP-Adapter (Gao et al., "CLIP-Adapter: Better Vision-Language Models with Feature
Adapters", IJCV 2023; reference trainer gaopengcuhk/CLIP-Adapter ``clip_adapter.py``).

A bottleneck MLP on the (unnormalised) CLIP image feature x, blended residually::

    A(x) = ReLU(W2 ReLU(W1 x))   W1: E -> E / REDUCTION, W2: E / REDUCTION -> E, no biases
    x'   = RATIO * A(x) + (1 - RATIO) * x

then cosine logits against the zero-shot text features of the dataset's hand-written prompt
(computed once here; upstream re-encodes them every step). Only the adapter is trained; it is
saved as ``clip_adapter/`` with upstream's keys (``fc.0.weight``, ``fc.2.weight``), so upstream
checkpoints load. The adapter is class-agnostic: new classes get their text features and the
same adapter.
"""
from __future__ import annotations

import logging
from typing import List, Sequence

import torch.nn as nn
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.registry import TRAINER_REGISTRY

from .clip_trainer import ClipPromptTrainer
from .zsclip import ZeroshotCLIP, ZeroshotCLIPModel

logger = logging.getLogger(__name__)


@register_config_extender("CLIPAdapter")
def add_clip_adapter_config(cfg: CN) -> None:
    """``TRAINER.CLIP_ADAPTER`` (upstream hard-codes ratio 0.2 and reduction 4; the key name
    ``RATIO`` is the one Dassl-based forks of CLIP-Adapter use)."""
    cfg.TRAINER.CLIP_ADAPTER = CN()
    cfg.TRAINER.CLIP_ADAPTER.RATIO = 0.2  # residual ratio alpha of the adapted feature
    cfg.TRAINER.CLIP_ADAPTER.REDUCTION = 4  # bottleneck width = feature width / REDUCTION
    cfg.TRAINER.CLIP_ADAPTER.PREC = "fp32"  # fp16, fp32, amp, bf16 (upstream: fp32)


class Adapter(nn.Module):
    """``Linear(E, E/r) -> ReLU -> Linear(E/r, E) -> ReLU``, no biases (upstream's layout)."""

    def __init__(self, width: int, reduction: int = 4):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(width, width // reduction, bias=False), nn.ReLU(),
                                nn.Linear(width // reduction, width, bias=False), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class CLIPAdapterModel(ZeroshotCLIPModel):
    """Zero-shot text features; image features through the residual adapter."""

    def __init__(self, clip_model: CLIP, classnames: Sequence[str], templates: Sequence[str],
                 ratio: float, reduction: int):
        super().__init__(clip_model, classnames, templates)
        self.ratio = ratio
        self.adapter = Adapter(clip_model.embed_dim, reduction)

    def forward(self, images: Tensor) -> Tensor:
        """Logits of images (the adapter reads CLIP's unnormalised image features, so this
        model does not use the feature cache)."""
        x = self.clip.visual(images).float()
        x = self.ratio * self.adapter(x) + (1 - self.ratio) * x
        return self.logits(x / x.norm(dim=-1, keepdim=True), self.fixed_text_features)


@TRAINER_REGISTRY.register()
class CLIPAdapter(ClipPromptTrainer):
    """CLIP-Adapter; config section ``TRAINER.CLIP_ADAPTER``."""

    model_name = "clip_adapter"
    precision_key = "TRAINER.CLIP_ADAPTER.PREC"
    cache_text_in_eval = False  # the text features are fixed
    fixed_checkpoint_keys: Sequence[str] = ()
    templates = ZeroshotCLIP.templates

    def check_cfg(self, cfg) -> None:
        c = cfg.TRAINER.CLIP_ADAPTER
        if not 0.0 <= c.RATIO <= 1.0:
            raise ConfigError(f"TRAINER.CLIP_ADAPTER.RATIO must lie in [0, 1]; got {c.RATIO!r}")
        if c.REDUCTION < 1:
            raise ConfigError(f"TRAINER.CLIP_ADAPTER.REDUCTION must be >= 1; got {c.REDUCTION!r}")

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> CLIPAdapterModel:
        c = self.cfg.TRAINER.CLIP_ADAPTER
        return CLIPAdapterModel(clip_model, classnames, self.templates(), c.RATIO, c.REDUCTION)

    def trainable_module(self) -> nn.Module:
        return self.model.adapter
