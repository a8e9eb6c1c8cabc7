"""CoOp: Context Optimization (Zhou et al., "Learning to Prompt for Vision-Language Models",
IJCV 2022, https://arxiv.org/abs/2109.01134).

Learned context vectors replace the hand-written words of the prompt: SOS + ctx + name + "." +
EOS, generic or class-specific (``CSC``), with the class token at the end, middle or front. The
class text features depend only on the context, so evaluation computes them once.

CTX_INIT rule (upstream ``trainers/coop.py``): one context vector per *word* of CTX_INIT
(``len(ctx_init.split(" "))``, N_CTX unused), initialised from the token embeddings at positions
1 .. n_words; later tokens of the init text stay fixed before the class name. "itap of a" (BPE
it/ap/of/a) learns 3 vectors from "it" "ap" "of" and keeps "a" fixed. With CSC the init context
is copied to every class (upstream ignores CSC when CTX_INIT is set and learns one shared ctx).
"""
from __future__ import annotations

import logging
from typing import List

from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.registry import TRAINER_REGISTRY

from .clip_trainer import ClipPromptTrainer
from .prompting import CLASS_TOKEN_POSITIONS, PromptedCLIP, PromptLearner

logger = logging.getLogger(__name__)


@register_config_extender("CoOp")
def add_coop_config(cfg: CN) -> None:
    """``TRAINER.COOP`` with upstream names and defaults."""
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16  # number of context vectors
    cfg.TRAINER.COOP.CSC = False  # class-specific context
    cfg.TRAINER.COOP.CTX_INIT = ""  # initialisation words (then N_CTX = their word count)
    cfg.TRAINER.COOP.PREC = "fp16"  # fp16, fp32, amp, bf16
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"  # end, middle or front


class CoOpCLIP(PromptedCLIP):
    """CLIP whose class text features come from a :class:`PromptLearner`."""

    def __init__(self, clip_model: CLIP, prompt_learner: PromptLearner):
        super().__init__(clip_model)
        self.prompt_learner = prompt_learner

    def text_features(self) -> Tensor:
        return self.encode_text(self.prompt_learner(), self.prompt_learner.eot_idx)


@TRAINER_REGISTRY.register()
class CoOp(ClipPromptTrainer):
    """Context Optimization (CoOp); config section ``TRAINER.COOP``."""

    prompted_image_encoder = False  # image features come from the feature cache

    precision_key = "TRAINER.COOP.PREC"

    def check_cfg(self, cfg) -> None:
        position = self.section_of(cfg).CLASS_TOKEN_POSITION
        if position not in CLASS_TOKEN_POSITIONS:
            raise ConfigError(f"{self.section_key}.CLASS_TOKEN_POSITION must be one of "
                              f"{', '.join(CLASS_TOKEN_POSITIONS)}; got {position!r}")

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> CoOpCLIP:
        c = self.section
        learner = PromptLearner(clip_model, classnames, n_ctx=c.N_CTX, ctx_init=c.CTX_INIT,
                                csc=c.CSC, class_token_position=c.CLASS_TOKEN_POSITION)
        return CoOpCLIP(clip_model, learner)
