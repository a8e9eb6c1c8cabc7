"""TCP: Textual-based Class-aware Prompt tuning (Yao et al., "TCP: Textual-based Class-aware Prompt
tuning for Visual-Language Model", CVPR 2024, https://arxiv.org/abs/2311.18231; code:
htyao89/Textual-based_Class-aware_prompt_tuning).

CoOp's learned context ``ctx`` [n_ctx, d_t] (``SOS + ctx + <dataset template with the name> +
EOS``), plus a *textual knowledge embedding* (TKE) ``meta_net``: ``Linear(E, E // 4) ->
QuickGELU -> Linear(E // 4, n_ctx * d_t)`` maps the frozen class text features ``t~_c`` [E] of
the dataset's hand-written prompt to ``n_ctx`` class-aware prompt tokens per class, which replace
positions ``1 .. n_ctx`` (the context) at the input of text layer ``CLASS_PROMPT_LAYER`` (0-based
block index; upstream: 8, i.e. before the 9th of ViT-B/16's 12 text blocks). Loss, as upstream's
code computes it (KgCoOp's knowledge-guided term):

    loss = CE + W * (1 - mean_c cos(t_c, t~_c))       (upstream: W = 8.0, hard-coded)

Image features are CLIP's, frozen (the feature cache serves them). At evaluation ``t~_c`` are the
features of the evaluated classes (new classes in base-to-novel), so the TKE carries what it
learned to unseen classes. Logged terms: ``ce``, ``kg``, ``loss``, ``acc``.

Templates (upstream ``CUSTOM_TEMPLATES``): the learned prompt is ``"X X X X <rest>"`` with the
dataset's rest (``"{}, a type of pet."``, ``"{} texture."``, ``"{}, a type of car"``; for
ImageNet and UCF101 the context replaces "a photo of a"), ``"{}."`` for other datasets; the
hand-written prompts are CoOp's zero-shot ones except DTD ("a photo of a {}, a type of
texture.") and FGVCAircraft ("a photo of an aircraft {}.").

Kept deviations from upstream (the numbers otherwise agree to float32 rounding):

- ``W`` (``TRAINER.TCP.W``, default 8.0) is the weight of the knowledge-guided term. Upstream
  hard-codes 8.0 there and its ``TRAINER.COOP.W`` (set to 1.0 by its scripts) is never used: the
  block overrides it with its own ``weights=[1.0]``, so the class-aware tokens replace the
  context outright, as here.
- ``CLASS_PROMPT_LAYER`` is a config key (upstream hard-codes ``layers=[8]``); a value beyond the
  text encoder's depth is an error (upstream silently inserts nothing).
- The TKE's output has ``n_ctx`` tokens of the backbone's text width (upstream: 4 x 512, with a
  4-token template, so only ``N_CTX`` 4 works there; 4 is the default here). ``CSC`` does not
  exist (upstream's forward fails with it). ``CTX_INIT`` words initialise the context as CoOp's
  (upstream ignores the text and always uses "a photo of a").
- The hand-written features are computed in the run's precision from the same frozen CLIP
  (upstream loads a second fp16 copy of CLIP on the GPU for them).

Config section ``TRAINER.TCP`` (upstream keeps its keys in ``TRAINER.COOP``; the upstream YAML
merges unchanged into that section, which TCP does not read). Upstream
``prompt_learner/model.pth.tar-<N>`` files (``ctx``, ``meta_net.*``, ``token_prefix``,
``token_suffix``) load via ``--model-dir``.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP
from dassl_lite.clip.transformer import QuickGELU
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.registry import TRAINER_REGISTRY

from .clip_trainer import ClipPromptTrainer
from .kgcoop import kg_distance, kg_training_step
from .prompting import PromptedCLIP, PromptLearner
from .zsclip import ZeroshotCLIPModel, dataset_template

logger = logging.getLogger(__name__)

# What follows the context in upstream's learned prompt, per dataset (upstream CUSTOM_TEMPLATES
# with its "X X X X " / "a photo of a " context part removed); other datasets: "{}.".
TCP_PROMPT_TEMPLATES = {
    "OxfordPets": "{}, a type of pet.",
    "OxfordFlowers": "{}, a type of flower.",
    "FGVCAircraft": "{}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "DTD": "{} texture.",
    "StanfordCars": "{}, a type of car",
    "Food101": "{}, a type of food.",
    "UCF101": "person doing {}.",
}
# Where upstream TCP's hand-written prompt (CUSTOM_TEMPLATES_ori) differs from CoOp's zero-shot one.
TCP_HANDCRAFTED_TEMPLATES = {
    "DescribableTextures": "a photo of a {}, a type of texture.",
    "DTD": "a photo of a {}, a type of texture.",
    "FGVCAircraft": "a photo of an aircraft {}.",
}


@register_config_extender("TCP")
def add_tcp_config(cfg: CN) -> None:
    """``TRAINER.TCP``: upstream's keys (its ``TRAINER.COOP``) with its published values."""
    cfg.TRAINER.TCP = CN()
    cfg.TRAINER.TCP.N_CTX = 4  # context vectors = class-aware tokens (upstream scripts: 4)
    cfg.TRAINER.TCP.CTX_INIT = ""  # initialisation words, as CoOp ("" = N(0, 0.02))
    cfg.TRAINER.TCP.PREC = "fp16"  # fp16, fp32, amp, bf16
    cfg.TRAINER.TCP.W = 8.0  # weight of the knowledge-guided term (upstream hard-codes 8.0)
    cfg.TRAINER.TCP.CLASS_PROMPT_LAYER = 8  # 0-based text block whose input takes the tokens


class TCPPromptLearner(PromptLearner):
    """CoOp's context ``ctx`` in ``SOS + ctx + template(name) + EOS`` and the TKE ``meta_net``
    (upstream key names). ``handcrafted`` [C, E] (normalised, frozen, not saved) feeds the TKE."""

    def __init__(self, clip_model: CLIP, classnames: Sequence[str], n_ctx: int, ctx_init: str,
                 template: str, handcrafted: Tensor):
        super().__init__(clip_model, classnames, n_ctx=n_ctx, ctx_init=ctx_init,
                         template=template)
        embed_dim, width = handcrafted.shape[-1], self.ctx.shape[-1]
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(embed_dim, embed_dim // 4)),
            ("relu", QuickGELU()),  # upstream's name for it
            ("linear2", nn.Linear(embed_dim // 4, self.n_ctx * width)),
        ]))
        self.register_buffer("handcrafted_text_features", handcrafted, persistent=False)

    def class_prompts(self) -> Tensor:
        """Class-aware prompt tokens [n_cls, n_ctx, width] (the TKE of the class features)."""
        hand = self.handcrafted_text_features
        out = self.meta_net(hand.to(self.meta_net.linear1.weight.dtype))
        return out.reshape(hand.shape[0], self.n_ctx, -1)


class TCPCLIP(PromptedCLIP):
    """Frozen CLIP + TCP's prompt learner; ``forward(images, features=True)`` also gives ``kg``."""

    def __init__(self, clip_model: CLIP, prompt_learner: TCPPromptLearner, layer: int):
        super().__init__(clip_model)
        self.prompt_learner = prompt_learner
        self.layer = layer

    def text_features(self) -> Tensor:
        learner = self.prompt_learner
        deep: List[Optional[Tensor]] = [None] * (self.layer - 1) + [learner.class_prompts()]
        return self.encode_text(learner(), learner.eot_idx, deep)

    def forward(self, images: Tensor, features: bool = False):
        """Logits; with ``features`` a dict of ``logits`` [B, C] and ``kg`` [1]."""
        if not features:
            return super().forward(images)
        text = self.text_features()
        logits = self.logits(self.image_features(images), text)
        hand = self.prompt_learner.handcrafted_text_features
        return {"logits": logits, "kg": kg_distance(text, hand)[None]}


@TRAINER_REGISTRY.register()
class TCP(ClipPromptTrainer):
    """Textual-based Class-aware Prompt tuning; config section ``TRAINER.TCP``; checkpoints in
    ``prompt_learner/`` (upstream's folder)."""

    prompted_image_encoder = False  # image features come from the feature cache
    precision_key = "TRAINER.TCP.PREC"

    def check_cfg(self, cfg) -> None:
        c = cfg.TRAINER.TCP
        if c.W < 0:
            raise ConfigError(f"TRAINER.TCP.W must be >= 0; got {c.W}")
        if c.CLASS_PROMPT_LAYER < 1:
            raise ConfigError(f"TRAINER.TCP.CLASS_PROMPT_LAYER must be >= 1 (the 0-based text "
                              f"block whose input takes the class-aware tokens); got "
                              f"{c.CLASS_PROMPT_LAYER}")

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> TCPCLIP:
        c = self.cfg.TRAINER.TCP
        layers = clip_model.transformer.layers
        if c.CLASS_PROMPT_LAYER >= layers:
            raise ConfigError(f"TRAINER.TCP.CLASS_PROMPT_LAYER={c.CLASS_PROMPT_LAYER} is not a "
                              f"block of backbone {self.cfg.MODEL.BACKBONE.NAME!r}'s {layers}-"
                              f"layer text encoder; use 1 .. {layers - 1}")
        name = self.cfg.DATASET.NAME
        hand_template = TCP_HANDCRAFTED_TEMPLATES.get(name) or dataset_template(name)
        with torch.no_grad(), self.precision.autocast():
            handcrafted = ZeroshotCLIPModel(clip_model, classnames,
                                            [hand_template]).fixed_text_features
        learner = TCPPromptLearner(clip_model, classnames, c.N_CTX, c.CTX_INIT,
                                   TCP_PROMPT_TEMPLATES.get(name, "{}."), handcrafted.float())
        logger.info(f"TCP: {learner.n_ctx} class-aware tokens at the input of text block "
                    f"{c.CLASS_PROMPT_LAYER} (0-based); hand-written prompt {hand_template!r}")
        return TCPCLIP(clip_model, learner, c.CLASS_PROMPT_LAYER)

    def forward_backward(self, batch: Dict[str, Any]) -> Dict[str, float]:
        return kg_training_step(self, batch, self.cfg.TRAINER.TCP.W)
