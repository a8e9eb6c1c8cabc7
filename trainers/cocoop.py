"""CoCoOp: Conditional Context Optimization (Zhou et al., "Conditional Prompt Learning for
Vision-Language Models", CVPR 2022, https://arxiv.org/abs/2203.05557).

A meta-net ``Linear(vis_dim, vis_dim // 16) -> ReLU -> Linear(vis_dim // 16, ctx_dim)`` maps the
normalised image feature to a bias added to every context vector, so each image gets its own
prompts for all classes. Upstream encodes the C prompts of each image in a Python loop over the
batch; here the B x C prompts are built at once and encoded in one (chunked) call, which gives
the same logits. Text features depend on the image, so evaluation encodes B x C prompts per batch
(no class text cache is possible).

CTX_INIT rule (upstream ``trainers/cocoop.py``, as CoOp): one context vector per word of CTX_INIT
from the token embeddings at positions 1 .. n_words; later init tokens stay fixed.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import List, Sequence

import torch.nn as nn
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.registry import TRAINER_REGISTRY

from .clip_trainer import ClipPromptTrainer
from .prompting import PromptedCLIP, PromptLearner

logger = logging.getLogger(__name__)


@register_config_extender("CoCoOp")
def add_cocoop_config(cfg: CN) -> None:
    """``TRAINER.COCOOP`` with upstream names and defaults."""
    cfg.TRAINER.COCOOP = CN()
    cfg.TRAINER.COCOOP.N_CTX = 16  # number of context vectors
    cfg.TRAINER.COCOOP.CTX_INIT = ""  # initialisation words (then N_CTX = their word count)
    cfg.TRAINER.COCOOP.PREC = "fp16"  # fp16, fp32, amp, bf16


class ConditionalPromptLearner(PromptLearner):
    """A generic context plus ``meta_net`` (upstream key names ``meta_net.linear1/linear2``)."""

    def __init__(self, clip_model: CLIP, classnames: Sequence[str], n_ctx: int = 16,
                 ctx_init: str = ""):
        super().__init__(clip_model, classnames, n_ctx=n_ctx, ctx_init=ctx_init)
        vis_dim = clip_model.visual.output_dim
        ctx_dim = clip_model.transformer.width
        if vis_dim < 16:
            raise ConfigError(f"CoCoOp's meta-net needs an image feature size >= 16 "
                              f"(hidden size vis_dim // 16); the backbone gives {vis_dim}")
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, vis_dim // 16)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(vis_dim // 16, ctx_dim)),
        ])).to(self.token_prefix.device)

    def forward(self, image_features: Tensor) -> Tensor:
        """Prompt embeddings [B, n_cls, L, width] for normalised image features [B, E]."""
        bias = self.meta_net(image_features.to(self.ctx.dtype))  # [B, ctx_dim]
        ctx = self.ctx.unsqueeze(0) + bias.unsqueeze(1)  # [B, n_ctx, ctx_dim]
        return self.construct_prompts(ctx.unsqueeze(1))


class CoCoOpCLIP(PromptedCLIP):
    """CLIP with image-conditioned prompts; logits [B, n_cls] from per-image text features."""

    def __init__(self, clip_model: CLIP, prompt_learner: ConditionalPromptLearner):
        super().__init__(clip_model)
        self.prompt_learner = prompt_learner

    def forward(self, images: Tensor) -> Tensor:
        image_features = self.image_features(images)  # [B, E]
        prompts = self.prompt_learner(image_features)  # [B, C, L, width]
        batch, n_cls = prompts.shape[:2]
        eot_idx = self.prompt_learner.eot_idx.repeat(batch)
        text = self.encode_text(prompts.flatten(0, 1), eot_idx, group_size=n_cls)
        text = text.view(batch, n_cls, -1)  # each image's prompts share SOT and its context
        return self.logits(image_features, text)


@TRAINER_REGISTRY.register()
class CoCoOp(ClipPromptTrainer):
    """Conditional Context Optimization (CoCoOp); config section ``TRAINER.COCOOP``.

    The loss is the cross-entropy of each image's logits over its own prompts, averaged over
    the batch (as upstream).
    """

    precision_key = "TRAINER.COCOOP.PREC"
    cache_text_in_eval = False  # text features depend on the image
    prompted_image_encoder = False  # the image encoder itself is frozen and unprompted

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> CoCoOpCLIP:
        c = self.cfg.TRAINER.COCOOP
        learner = ConditionalPromptLearner(clip_model, classnames, n_ctx=c.N_CTX,
                                           ctx_init=c.CTX_INIT)
        return CoCoOpCLIP(clip_model, learner)
