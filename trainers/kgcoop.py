"""KgCoOp: Knowledge-guided Context Optimization (Yao et al., "Visual-Language Prompt Tuning with
Knowledge-guided Context Optimization", CVPR 2023, https://arxiv.org/abs/2303.13283).

CoOp (:class:`trainers.coop.CoOp`: same prompt, same context initialisation) trained with a
knowledge-guided term that keeps the learned class text features ``t_c`` close to the frozen
features ``t~_c`` of the dataset's hand-written prompt (``"a photo of a {}."``, ...):

    loss = CE + W * (1 - mean_c cos(t_c, t~_c))

as upstream's code computes it. (The paper writes the distance as the mean squared Euclidean
distance of the normalised features, ``mean_c ||t_c - t~_c||^2 = 2 (1 - mean_c cos)``, i.e. the
same term with twice the weight; ``W`` here is upstream's, e.g. 8.0 in its published runs.)
The hand-written features are computed once when the model is built.

Kept deviations from upstream (the numbers otherwise agree to float32 rounding):
``CLASS_TOKEN_POSITION`` is honoured (``end``, ``middle``, ``front``, as CoOp's prompt learner);
upstream's KgCoOp prompt learner ignores it (``middle``/``front`` equal ``end`` there). The
hand-written features are computed in the run's precision (``PREC``); upstream always computes
them with its fp16 copy of CLIP.

Config section ``TRAINER.KGCOOP`` (upstream keeps these keys in ``TRAINER.COOP``, with a boolean
``CTX_INIT`` that means "a photo of a"): CoOp's ``N_CTX``, ``CSC``, ``CTX_INIT``, ``PREC``,
``CLASS_TOKEN_POSITION`` plus ``W``. Upstream ``prompt_learner/model.pth.tar-<N>`` files load via
``--model-dir``; their unused ``bias_vectors`` and ``meta_net.linear1.*`` are ignored.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.registry import TRAINER_REGISTRY

from .coop import CoOp, CoOpCLIP
from .prompting import PromptLearner
from .zsclip import ZeroshotCLIPModel, dataset_template

logger = logging.getLogger(__name__)

# Where upstream KgCoOp's hand-written prompt differs from CoOp's zero-shot one.
KGCOOP_TEMPLATES = {"DescribableTextures": "a photo of a {}, a type of texture.",
                    "DTD": "a photo of a {}, a type of texture."}


# Upstream's PromptLearner holds these, but never trains nor uses them (only ``ctx`` is learned).
UPSTREAM_UNUSED_KEYS = ("bias_vectors", "meta_net.linear1.weight", "meta_net.linear1.bias")


@register_config_extender("KgCoOp")
def add_kgcoop_config(cfg: CN) -> None:
    """``TRAINER.KGCOOP``: CoOp's keys and defaults plus the weight ``W`` (upstream: 1.0)."""
    cfg.TRAINER.KGCOOP = CN()
    cfg.TRAINER.KGCOOP.N_CTX = 16  # number of context vectors
    cfg.TRAINER.KGCOOP.CSC = False  # class-specific context
    cfg.TRAINER.KGCOOP.CTX_INIT = ""  # initialisation words, as CoOp
    cfg.TRAINER.KGCOOP.PREC = "fp16"  # fp16, fp32, amp, bf16
    cfg.TRAINER.KGCOOP.CLASS_TOKEN_POSITION = "end"  # end, middle or front
    cfg.TRAINER.KGCOOP.W = 1.0  # weight of the knowledge-guided term


def kg_distance(text_features: Tensor, handcrafted: Tensor) -> Tensor:
    """``1 - mean_c cos(t_c, t~_c)`` between learned and hand-written class text features."""
    cos = F.cosine_similarity(text_features.float(), handcrafted.float(), dim=-1, eps=1e-7)
    return 1.0 - cos.mean()


def kg_training_step(trainer, batch: Dict[str, Any], weight: float) -> Dict[str, float]:
    """One step of ``CE + weight * kg`` for a model whose ``forward(images, features=True)``
    gives ``logits`` and ``kg`` (KgCoOp, TCP); returns the logged terms."""
    images, labels = trainer.parse_batch_train(batch)
    with trainer.precision.autocast():
        out = trainer.model(images, features=True)
        logits = out["logits"].float()
        ce = F.cross_entropy(logits, labels)
        kg = out["kg"].float().mean()
        loss = ce + weight * kg
    trainer.model_backward_and_update(loss)
    acc = (logits.argmax(dim=1) == labels).float().mean().item() * 100
    return {"loss": loss.item(), "ce": ce.item(), "kg": kg.item(), "acc": acc}


class KgCoOpCLIP(CoOpCLIP):
    """CoOp's CLIP plus the frozen hand-written class text features ``handcrafted_text_features``;
    ``forward(images, features=True)`` gives the logits and the knowledge-guided distance."""

    def __init__(self, clip_model: CLIP, prompt_learner: PromptLearner, handcrafted: Tensor):
        super().__init__(clip_model, prompt_learner)
        self.register_buffer("handcrafted_text_features", handcrafted, persistent=False)

    def forward(self, images: Tensor, features: bool = False):
        """Logits; with ``features`` a dict of ``logits`` [B, C] and ``kg`` [1] (per replica
        under DataParallel, where every replica computes the same value)."""
        if not features:
            return super().forward(images)
        text = self.text_features()
        logits = self.logits(self.image_features(images), text)
        return {"logits": logits, "kg": kg_distance(text, self.handcrafted_text_features)[None]}


@TRAINER_REGISTRY.register()
class KgCoOp(CoOp):
    """Knowledge-guided Context Optimization; config section ``TRAINER.KGCOOP``; checkpoints in
    ``prompt_learner/``."""

    precision_key = "TRAINER.KGCOOP.PREC"

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        if cfg.TRAINER.KGCOOP.W < 0:
            raise ConfigError(f"TRAINER.KGCOOP.W must be >= 0; got {cfg.TRAINER.KGCOOP.W}")

    def remap_checkpoint_state(self, name: str,
                               state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Drop the tensors upstream's prompt learner holds but never trains or uses."""
        unused = [k for k in state_dict if k in UPSTREAM_UNUSED_KEYS]
        if unused:
            logger.info(f"Ignoring upstream KgCoOp's unused tensors {unused}")
        state_dict = {k: v for k, v in state_dict.items() if k not in UPSTREAM_UNUSED_KEYS}
        return super().remap_checkpoint_state(name, state_dict)

    def handcrafted_template(self) -> str:
        """The dataset's hand-written prompt as upstream KgCoOp writes it."""
        name = self.cfg.DATASET.NAME
        return KGCOOP_TEMPLATES.get(name) or dataset_template(name)

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> KgCoOpCLIP:
        coop = super().build_prompted_clip(clip_model, classnames)
        with torch.no_grad(), self.precision.autocast():
            handcrafted = ZeroshotCLIPModel(clip_model, classnames,
                                            [self.handcrafted_template()]).fixed_text_features
        return KgCoOpCLIP(clip_model, coop.prompt_learner, handcrafted)

    def forward_backward(self, batch: Dict[str, Any]) -> Dict[str, float]:
        return kg_training_step(self, batch, self.cfg.TRAINER.KGCOOP.W)
