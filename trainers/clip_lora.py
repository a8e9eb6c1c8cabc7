"""CLIP-LoRA (Zanella & Ben Ayed, "Low-Rank Few-Shot Adaptation of Vision-Language Models",
CVPRW 2024; reference code MaxZanella/CLIP-LoRA).

Low-rank adapters (see :mod:`trainers.lora`) on the attention projections ``PARAMS`` of the
blocks ``POSITION`` of the text encoder, the image encoder or both (``ENCODER``); everything
else is frozen. Logits are ``logit_scale * cos`` between the image feature and the text
features of the dataset's hand-written prompt, both computed through the adapted encoders (text
features: every training step, once per evaluation). Checkpoints (``clip_lora/``) hold only the LoRA tensors, under the CLIP model's key
names (``transformer.resblocks.<i>.attn.q_proj.w_lora_A``, ``visual.transformer...``).

Upstream defaults (``run_utils.py``): rank 2, alpha 1, dropout 0.25, q/k/v, all layers, both
encoders, AdamW lr 2e-4 (weight decay 1e-2, betas 0.9/0.999), batch 32, 500 x shots iterations
with a cosine schedule, fp16 autocast with a gradient scaler (``PREC amp`` here).
"""
from __future__ import annotations

import logging
from typing import List

import torch.nn as nn
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP, tokenize
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.registry import TRAINER_REGISTRY

from .clip_trainer import ClipPromptTrainer
from .lora import ENCODERS, add_lora, lora_layers
from .prompting import PromptedCLIP, prompt_classnames
from .zsclip import dataset_template

logger = logging.getLogger(__name__)


@register_config_extender("CLIPLoRA")
def add_clip_lora_config(cfg: CN) -> None:
    """``TRAINER.CLIP_LORA``: upstream's command-line options (upper-cased) and defaults."""
    cfg.TRAINER.CLIP_LORA = CN()
    cfg.TRAINER.CLIP_LORA.ENCODER = "both"  # text, vision or both
    cfg.TRAINER.CLIP_LORA.POSITION = "all"  # bottom, mid, up, half-up, half-bottom, all, top3, ...
    cfg.TRAINER.CLIP_LORA.PARAMS = ["q", "k", "v"]  # projections with LoRA: q, k, v, o
    cfg.TRAINER.CLIP_LORA.R = 2  # rank
    cfg.TRAINER.CLIP_LORA.ALPHA = 1.0  # scaling = ALPHA / sqrt(R)
    cfg.TRAINER.CLIP_LORA.DROPOUT_RATE = 0.25  # dropout before the LoRA branch
    cfg.TRAINER.CLIP_LORA.PREC = "amp"  # fp16, fp32, amp, bf16


class CLIPLoRAModel(PromptedCLIP):
    """CLIP (with LoRA inside) and the tokenized hand-written prompt of every class."""

    def __init__(self, clip_model: CLIP, classnames: List[str], template: str):
        super().__init__(clip_model)
        tokens = tokenize([template.format(n) for n in prompt_classnames(classnames)],
                          context_length=clip_model.context_length)
        eot_idx = tokens.argmax(dim=-1)
        device = clip_model.token_embedding.weight.device
        self.register_buffer("tokens", tokens[:, :int(eot_idx.max()) + 1].to(device),
                             persistent=False)
        self.register_buffer("eot_idx", eot_idx.to(device), persistent=False)

    def text_features(self) -> Tensor:
        return self.encode_text(self.clip.token_embedding(self.tokens), self.eot_idx)


@TRAINER_REGISTRY.register()
class CLIPLoRA(ClipPromptTrainer):
    """CLIP-LoRA; config section ``TRAINER.CLIP_LORA``."""

    model_name = "clip_lora"
    precision_key = "TRAINER.CLIP_LORA.PREC"
    fixed_checkpoint_keys = ()

    def check_cfg(self, cfg) -> None:
        encoder = cfg.TRAINER.CLIP_LORA.ENCODER
        if encoder not in ENCODERS:
            raise ConfigError(f"TRAINER.CLIP_LORA.ENCODER must be one of {', '.join(ENCODERS)}; "
                              f"got {encoder!r}")

    def build_clip(self) -> CLIP:
        """The frozen CLIP with LoRA added to the chosen blocks (LoRA tensors in float32)."""
        clip_model = super().build_clip()
        c = self.cfg.TRAINER.CLIP_LORA
        encoders = {"text": clip_model.transformer}
        if c.ENCODER != "text":
            if not hasattr(clip_model.visual, "transformer"):
                raise ConfigError(f"TRAINER.CLIP_LORA.ENCODER {c.ENCODER!r} needs a ViT image "
                                  f"encoder; {self.cfg.MODEL.BACKBONE.NAME!r} is a ResNet")
            encoders["vision"] = clip_model.visual.transformer
        for name, transformer in encoders.items():
            if c.ENCODER in (name, "both"):
                layers = lora_layers(c.POSITION, transformer.layers)
                add_lora(transformer, layers, list(c.PARAMS), c.R, c.ALPHA, c.DROPOUT_RATE)
                logger.info(f"LoRA (rank {c.R}, alpha {c.ALPHA}, dropout {c.DROPOUT_RATE}) on "
                            f"{'/'.join(c.PARAMS)} of {name} blocks {layers}")
        return clip_model

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> CLIPLoRAModel:
        return CLIPLoRAModel(clip_model, classnames, dataset_template(self.cfg.DATASET.NAME))

    def trainable_module(self) -> nn.Module:
        return self.model.clip
