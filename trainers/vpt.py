"""VPT as in the MaPLe repository (multimodal-prompt-learning ``trainers/vpt.py``): vision-only
prompting of CLIP with fixed hand-crafted text prompts.

``ctx`` [N_CTX_VISION, d_v] is appended to the image tokens; for ``PROMPT_DEPTH_VISION`` = J > 1,
``deep`` [J-1, N_CTX_VISION, d_v] replaces the prompt tokens at the input of layers 1 .. J-1
(J = 1: shallow VPT). Prompts start from N(0, 0.02). The classifier is the frozen text encoder's
features of ``"<CTX_INIT> <name>."``, computed once when the model is built (upstream hard-codes
"a photo of a", CTX_INIT's default, and ignores the key).

CTX_INIT rule: nothing is learned from it; it is only the fixed text prompt of the classifier.

Trainable values: N_CTX_VISION * d_v * J.

Upstream ``prompt_learner/model.pth.tar-<N>`` files (the whole model) load via ``--model-dir``:
``image_encoder.VPT`` -> ``ctx``, ``image_encoder.transformer.resblocks.<i>.VPT_shallow`` ->
``deep[i-1]``; the frozen CLIP keys are ignored. For the VPT paper's recipe (prompt dropout,
uniform initialisation, optional linear head) see ``VPTDeep``.
"""
from __future__ import annotations

from typing import List

from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.registry import TRAINER_REGISTRY

from .deep_prompts import (DeepPromptedCLIP, DeepPromptTrainer, UpstreamLayout, VisionPrompts,
                           check_depth, vit_layers)


@register_config_extender("VPT")
def add_vpt_config(cfg: CN) -> None:
    """``TRAINER.VPT`` with upstream names and defaults."""
    cfg.TRAINER.VPT = CN()
    cfg.TRAINER.VPT.N_CTX_VISION = 2  # prompt tokens per layer
    cfg.TRAINER.VPT.CTX_INIT = "a photo of a"  # words of the fixed text prompt
    cfg.TRAINER.VPT.PREC = "fp16"  # fp16, fp32, amp, bf16
    cfg.TRAINER.VPT.PROMPT_DEPTH_VISION = 1  # layers with prompts; 1 = shallow


@TRAINER_REGISTRY.register()
class VPT(DeepPromptTrainer):
    """Visual prompt tuning of CLIP with fixed text prompts; config section ``TRAINER.VPT``;
    checkpoints in ``prompt_learner/`` (upstream's folder)."""

    precision_key = "TRAINER.VPT.PREC"
    model_name = "prompt_learner"
    upstream_layout = UpstreamLayout(
        stacks=(("image_encoder.transformer.resblocks.{i}.VPT_shallow", 1, "deep"),),
        renames=(("image_encoder.VPT", "ctx"),),
    )

    def check_cfg(self, cfg) -> None:
        if cfg.TRAINER.VPT.N_CTX_VISION < 1:
            raise ConfigError(f"TRAINER.VPT.N_CTX_VISION must be >= 1; "
                              f"got {cfg.TRAINER.VPT.N_CTX_VISION}")

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> DeepPromptedCLIP:
        c = self.cfg.TRAINER.VPT
        layers = vit_layers(clip_model, "VPT", self.cfg.MODEL.BACKBONE.NAME)
        check_depth("TRAINER.VPT.PROMPT_DEPTH_VISION", c.PROMPT_DEPTH_VISION, layers,
                    "vision encoder")
        learner = VisionPrompts(c.N_CTX_VISION, c.PROMPT_DEPTH_VISION, clip_model.visual.width)
        return DeepPromptedCLIP(clip_model, learner, self.fixed_text(clip_model, classnames))
