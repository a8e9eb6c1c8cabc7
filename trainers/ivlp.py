"""IVLP: Independent Vision-Language Prompting, the baseline of MaPLe (Khattak et al., CVPR 2023).

Text and vision prompts are learned separately, with no coupling:

- text (``PROMPT_DEPTH_TEXT`` = Jt >= 1): context ``text.ctx`` [N_CTX_TEXT, d_t] after SOS
  (initialised from CTX_INIT as MaPLe does) and ``text.deep`` [Jt-1, N_CTX_TEXT, d_t] replacing
  the context tokens at the input of text layers 1 .. Jt-1;
- vision (``PROMPT_DEPTH_VISION`` = Jv >= 1): ``vision.ctx`` [N_CTX_VISION, d_v] appended to the
  image tokens and ``vision.deep`` [Jv-1, N_CTX_VISION, d_v] replacing them at layers 1 .. Jv-1.

A depth of 0 switches a side off: Jv = 0 is deep *language* prompting (upstream's
``vit_b16_c2_ep5_batch4_4ctx_language_only.yaml``); Jt = 0 is vision-only prompting with the fixed
text ``"<CTX_INIT> <name>."`` (upstream refuses Jt = 0 and points to its VPT trainer).
All prompts start from N(0, 0.02) (except the text context when CTX_INIT is used).

CTX_INIT rule (upstream ``trainers/independentVL.py``, as MaPLe): with N_CTX_TEXT <= 4 the text
context is the embedding of the first N_CTX_TEXT BPE tokens of CTX_INIT, the rest stays fixed.

Trainable values: N_CTX_TEXT*d_t*Jt + N_CTX_VISION*d_v*Jv.

Upstream ``VLPromptLearner/model.pth.tar-<N>`` files (the whole model) load via ``--model-dir``:
``prompt_learner.ctx`` -> ``text.ctx``, ``text_encoder.transformer.resblocks.<i>.VPT_shallow``
-> ``text.deep[i-1]``, ``image_encoder.VPT`` -> ``vision.ctx``,
``image_encoder.transformer.resblocks.<i>.VPT_shallow`` -> ``vision.deep[i-1]``.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import torch.nn as nn
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.registry import TRAINER_REGISTRY

from .deep_prompts import (DeepPromptedCLIP, DeepPromptTrainer, DeepTextPromptLearner,
                           UpstreamLayout, VisionPrompts, check_depth, vit_layers)

logger = logging.getLogger(__name__)


@register_config_extender("IVLP")
def add_ivlp_config(cfg: CN) -> None:
    """``TRAINER.IVLP`` with upstream names and defaults."""
    cfg.TRAINER.IVLP = CN()
    cfg.TRAINER.IVLP.N_CTX_VISION = 2  # prompt tokens per vision layer
    cfg.TRAINER.IVLP.N_CTX_TEXT = 2  # prompt tokens per text layer
    cfg.TRAINER.IVLP.CTX_INIT = "a photo of a"  # initialisation words (text prompts only)
    cfg.TRAINER.IVLP.PREC = "fp16"  # fp16, fp32, amp, bf16
    cfg.TRAINER.IVLP.PROMPT_DEPTH_VISION = 9  # vision layers with prompts; 0 = none
    cfg.TRAINER.IVLP.PROMPT_DEPTH_TEXT = 9  # text layers with prompts; 0 = none (fixed text)


class VLPromptLearner(nn.Module):
    """Independent prompts: ``text`` (a :class:`DeepTextPromptLearner`) and ``vision``
    (:class:`VisionPrompts`); either may be None."""

    def __init__(self, text: Optional[DeepTextPromptLearner], vision: Optional[VisionPrompts]):
        super().__init__()
        self.text = text
        self.vision = vision

    def text_inputs(self) -> Tuple[Tensor, Tensor, List[Tensor]]:
        return self.text.text_inputs()

    def vision_inputs(self, batch: int) -> Dict[str, object]:
        return {} if self.vision is None else self.vision.vision_inputs(batch)


@TRAINER_REGISTRY.register()
class IVLP(DeepPromptTrainer):
    """Independent V-L prompting; config section ``TRAINER.IVLP``; checkpoints in
    ``VLPromptLearner/`` (upstream's folder)."""

    precision_key = "TRAINER.IVLP.PREC"
    model_name = "VLPromptLearner"
    upstream_layout = UpstreamLayout(
        stacks=(("text_encoder.transformer.resblocks.{i}.VPT_shallow", 1, "text.deep"),
                ("image_encoder.transformer.resblocks.{i}.VPT_shallow", 1, "vision.deep")),
        renames=(("prompt_learner.ctx", "text.ctx"), ("image_encoder.VPT", "vision.ctx")),
    )

    def check_cfg(self, cfg) -> None:
        c, key = self.section_of(cfg), self.section_key
        if c.PROMPT_DEPTH_TEXT < 0 or c.PROMPT_DEPTH_VISION < 0:
            raise ConfigError(f"{key}.PROMPT_DEPTH_TEXT and PROMPT_DEPTH_VISION must be "
                              f">= 0; got {c.PROMPT_DEPTH_TEXT} and {c.PROMPT_DEPTH_VISION}")
        if c.PROMPT_DEPTH_TEXT == 0 and c.PROMPT_DEPTH_VISION == 0:
            raise ConfigError(f"{key} needs PROMPT_DEPTH_TEXT > 0 or PROMPT_DEPTH_VISION > 0 "
                              "(both are 0: nothing to learn; use ZeroshotCLIP)")
        for side in ("TEXT", "VISION"):
            if c[f"PROMPT_DEPTH_{side}"] > 0 and c[f"N_CTX_{side}"] < 1:
                raise ConfigError(f"{key}.N_CTX_{side} must be >= 1 when "
                                  f"PROMPT_DEPTH_{side} > 0; got {c[f'N_CTX_{side}']}")

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> DeepPromptedCLIP:
        c, key, name = self.section, self.section_key, type(self).__name__
        text = vision = fixed = None
        if c.PROMPT_DEPTH_TEXT > 0:
            check_depth(f"{key}.PROMPT_DEPTH_TEXT", c.PROMPT_DEPTH_TEXT,
                        clip_model.transformer.layers, "text encoder")
            text = DeepTextPromptLearner(clip_model, classnames, c.N_CTX_TEXT, c.CTX_INIT,
                                         c.PROMPT_DEPTH_TEXT)
        else:
            fixed = self.fixed_text(clip_model, classnames)
        if c.PROMPT_DEPTH_VISION > 0:
            layers = vit_layers(clip_model, f"{name} with PROMPT_DEPTH_VISION > 0",
                                self.cfg.MODEL.BACKBONE.NAME)
            check_depth(f"{key}.PROMPT_DEPTH_VISION", c.PROMPT_DEPTH_VISION, layers,
                        "vision encoder")
            vision = VisionPrompts(c.N_CTX_VISION, c.PROMPT_DEPTH_VISION, clip_model.visual.width)
        logger.info(f"{name}: text prompts {c.N_CTX_TEXT} x depth {c.PROMPT_DEPTH_TEXT}, vision "
                    f"prompts {c.N_CTX_VISION} x depth {c.PROMPT_DEPTH_VISION}")
        return DeepPromptedCLIP(clip_model, VLPromptLearner(text, vision), fixed)
