"""VPTSupervised: Visual Prompt Tuning in the VPT paper's own setting (Jia et al., "Visual Prompt
Tuning", ECCV 2022; reference code KMnP/vpt): a frozen *supervised* ViT (ImageNet-21k ViT-B/16),
prompts after the class token, and a trained head on the class token after the final LayerNorm.

    [CLS, P_1..P_n, patches] -> blocks -> LayerNorm -> CLS (width D) -> head -> logits

- shallow (``MODEL.PROMPT.DEEP False``): one prompt set [n, d] after the patch embedding;
- deep (``DEEP True``): ``num_layers - 1`` further sets replace the prompt outputs at the input
  of every later block;
- init uniform(-v, v), ``v = sqrt(6 / (3 * patch_h * patch_w + d))``; ``d`` = D, or ``PROJECT``
  with a ``Linear(PROJECT, D)`` projection (Kaiming-normal, fan-out); prompt dropout ``DROPOUT``;
- head (``MODEL.HEAD.NAME``): ``linear`` (default) or ``mlp`` (``HIDDEN_LAYERS``, default one
  hidden layer of width D; Linear -> activation -> BatchNorm -> dropout per layer, as the
  reference's MLP); the last layer is Kaiming-normal (fan-out) with bias -log(99) (prior 0.01);
- loss: cross-entropy with class weights ``TRAINER.VPTSUPERVISED.CLASS_WEIGHTS_TYPE`` (``none``,
  ``inv``: 1/n_c, ``inv_sqrt``: 1/sqrt(n_c), normalised to sum to the class count; n_c = training
  images of class c);
- ``MODEL.TRANSFER_TYPE``: ``prompt`` (VPT) or ``linear`` (no prompts: a linear probe of the
  frozen class token, the paper's "Linear" baseline).

Trainable values: n * d * (L if DEEP else 1) [+ PROJECT * D + D] + head, with the linear head
D * C + C. The backbone is any :mod:`dassl_lite.backbones` ViT (``MODEL.BACKBONE.NAME``: a KMnP/vpt
feature name such as ``sup_vitb16_imagenet21k``, ``ToyViT``, or a checkpoint path).

Reference config names: ``MODEL.PROMPT.{NUM_TOKENS, DEEP, DROPOUT, PROJECT, INITIATION,
LOCATION}`` and ``MODEL.TRANSFER_TYPE`` as KMnP/vpt; its ``DATA.CLASS_WEIGHTS_TYPE`` is
``TRAINER.VPTSUPERVISED.CLASS_WEIGHTS_TYPE``, its ``MODEL.MLP_NUM`` k is ``MODEL.HEAD.NAME mlp``
with k entries D in ``MODEL.HEAD.HIDDEN_LAYERS``. Only ``INITIATION random`` and ``LOCATION prepend``
exist (the reference's clean ViT asserts the same).
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.backbones import PromptableViT, ViTArch, load_supervised_vit
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.config.validate import check_choice
from dassl_lite.engine import TrainerX
from dassl_lite.optim import build_lr_scheduler, build_optimizer
from dassl_lite.registry import TRAINER_REGISTRY

from .deep_prompts import VisionPrompts
from .vpt_deep import prompt_projection, uniform_init

logger = logging.getLogger(__name__)

TRANSFER_TYPES = ("prompt", "linear")
HEADS = ("linear", "mlp")
CLASS_WEIGHTS = {"none": 0.0, "inv": -1.0, "inv_sqrt": -0.5}
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}
HEAD_PRIOR = 0.01  # the reference head's initial class probability (bias -log(99))


@register_config_extender("VPTSupervised")
def add_vpt_supervised_config(cfg: CN) -> None:
    """``MODEL.PROMPT``, ``MODEL.TRANSFER_TYPE`` (KMnP/vpt names and defaults) and
    ``TRAINER.VPTSUPERVISED``."""
    cfg.MODEL.TRANSFER_TYPE = "prompt"  # prompt (VPT) or linear (frozen class token + head)
    cfg.MODEL.PROMPT = CN()
    cfg.MODEL.PROMPT.NUM_TOKENS = 5  # prompt tokens per layer
    cfg.MODEL.PROMPT.LOCATION = "prepend"  # [CLS, P, patches]; the only location
    cfg.MODEL.PROMPT.INITIATION = "random"  # uniform(-v, v); the only initialisation
    cfg.MODEL.PROMPT.PROJECT = -1  # prompt dim with a Linear(PROJECT, D); -1 = no projection
    cfg.MODEL.PROMPT.DEEP = False  # prompts at the input of every block
    cfg.MODEL.PROMPT.DROPOUT = 0.0  # prompt dropout
    cfg.TRAINER.VPTSUPERVISED = CN()
    cfg.TRAINER.VPTSUPERVISED.PREC = "fp32"  # fp16, fp32, amp, bf16
    cfg.TRAINER.VPTSUPERVISED.CLASS_WEIGHTS_TYPE = "none"  # none, inv, inv_sqrt


class ClassHead(nn.Module):
    """``projection`` (hidden layers; empty for a linear head) then ``last_layer``."""

    def __init__(self, width: int, num_classes: int, hidden: Sequence[int] = (),
                 activation: str = "relu", bn: bool = True, dropout: float = 0.0):
        super().__init__()
        layers, prev = [], width
        for dim in hidden:
            fc = nn.Linear(prev, dim)
            nn.init.kaiming_normal_(fc.weight, a=0, mode="fan_out")
            layers += [fc, ACTIVATIONS[activation]()]
            layers += [nn.BatchNorm1d(dim)] if bn else []
            layers += [nn.Dropout(dropout)] if dropout > 0 else []
            prev = dim
        self.projection = nn.Sequential(*layers)
        self.last_layer = nn.Linear(prev, num_classes)
        nn.init.kaiming_normal_(self.last_layer.weight, a=0, mode="fan_out")
        nn.init.constant_(self.last_layer.bias, -math.log((1 - HEAD_PRIOR) / HEAD_PRIOR))

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(self.projection(x))


class SupervisedVPTLearner(nn.Module):
    """The trained part: ``prompts`` (None for a linear probe) and ``head``."""

    def __init__(self, prompts: Optional[VisionPrompts], head: ClassHead):
        super().__init__()
        self.prompts = prompts
        self.head = head


def build_learner(cfg, arch: ViTArch, num_classes: int) -> SupervisedVPTLearner:
    """Prompts and head for a ViT of ``arch`` from ``cfg`` (MODEL.PROMPT, MODEL.HEAD)."""
    p, h = cfg.MODEL.PROMPT, cfg.MODEL.HEAD
    prompts = None
    if cfg.MODEL.TRANSFER_TYPE == "prompt":
        proj = prompt_projection(p.PROJECT, arch.width)
        prompt_dim = arch.width if proj is None else p.PROJECT
        prompts = VisionPrompts(p.NUM_TOKENS, arch.depth if p.DEEP else 1, arch.width, proj=proj,
                                dropout=p.DROPOUT, init=uniform_init(arch.patch_size, prompt_dim))
    hidden = ()
    if h.NAME == "mlp":
        hidden = tuple(h.HIDDEN_LAYERS) or (arch.width,)
    head = ClassHead(arch.width, num_classes, hidden, h.ACTIVATION, h.BN, h.DROPOUT)
    return SupervisedVPTLearner(prompts, head)


class SupervisedVPT(nn.Module):
    """A frozen :class:`PromptableViT` (always in eval mode) and a :class:`SupervisedVPTLearner`."""

    def __init__(self, backbone: PromptableViT, learner: SupervisedVPTLearner):
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.learner = learner

    def train(self, mode: bool = True) -> "SupervisedVPT":
        super().train(mode)
        self.backbone.eval()  # frozen: no dropout / statistics updates (as the reference)
        return self

    def features(self, images: Tensor) -> Tensor:
        """The class token after the final norm, with the learner's prompts."""
        prompts = self.learner.prompts
        if prompts is None:
            with torch.no_grad():
                return self.backbone(images)
        return self.backbone(images, **prompts.vision_inputs(images.shape[0]))

    def forward(self, images: Tensor) -> Tensor:
        head = self.learner.head
        return head(self.features(images).to(head.last_layer.weight.dtype))


def class_weights(labels: Sequence[int], num_classes: int, kind: str) -> Optional[Tensor]:
    """Cross-entropy class weights: None for ``none``; else n_c ** mu (mu -1 or -0.5), scaled
    to sum to ``num_classes``."""
    if kind == "none":
        return None
    counts = Counter(int(x) for x in labels)
    empty = [c for c in range(num_classes) if counts[c] == 0]
    if empty:
        raise ConfigError(f"CLASS_WEIGHTS_TYPE {kind} needs training images of every class; "
                          f"classes {empty[:10]} have none")
    w = torch.tensor([counts[c] for c in range(num_classes)], dtype=torch.float64)
    w = w ** CLASS_WEIGHTS[kind]
    return (w / w.sum() * num_classes).float()


@TRAINER_REGISTRY.register()
class VPTSupervised(TrainerX):
    """VPT on a frozen supervised ViT with a head on the class token (module docstring);
    checkpoints (prompts + head) in ``prompt_learner/``."""

    precision_key = "TRAINER.VPTSUPERVISED.PREC"
    model_name = "prompt_learner"

    def check_cfg(self, cfg) -> None:
        p = cfg.MODEL.PROMPT
        check_choice("MODEL.TRANSFER_TYPE", cfg.MODEL.TRANSFER_TYPE, TRANSFER_TYPES)
        check_choice("MODEL.PROMPT.LOCATION", p.LOCATION, ("prepend",))
        check_choice("MODEL.PROMPT.INITIATION", p.INITIATION, ("random",))
        check_choice("MODEL.HEAD.NAME", cfg.MODEL.HEAD.NAME or "linear", HEADS)
        check_choice("MODEL.HEAD.ACTIVATION", cfg.MODEL.HEAD.ACTIVATION, tuple(ACTIVATIONS))
        check_choice("TRAINER.VPTSUPERVISED.CLASS_WEIGHTS_TYPE",
                      cfg.TRAINER.VPTSUPERVISED.CLASS_WEIGHTS_TYPE, tuple(CLASS_WEIGHTS))
        if p.NUM_TOKENS < 1:
            raise ConfigError(f"MODEL.PROMPT.NUM_TOKENS must be >= 1; got {p.NUM_TOKENS}")
        if not 0 <= p.DROPOUT < 1:
            raise ConfigError(f"MODEL.PROMPT.DROPOUT must lie in [0, 1); got {p.DROPOUT}")
        if p.PROJECT != -1 and p.PROJECT < 1:
            raise ConfigError(f"MODEL.PROMPT.PROJECT must be -1 (no projection) or >= 1; "
                              f"got {p.PROJECT}")
        if not cfg.MODEL.BACKBONE.NAME:
            raise ConfigError("MODEL.BACKBONE.NAME must name a supervised ViT (e.g. "
                              "sup_vitb16_imagenet21k, ToyViT) or a checkpoint path")
        height, width = cfg.INPUT.SIZE
        if height != width:
            raise ConfigError(f"VPTSupervised needs square inputs; INPUT.SIZE is {cfg.INPUT.SIZE}")

    def build_model(self) -> None:
        cfg = self.cfg
        backbone = load_supervised_vit(cfg.MODEL.BACKBONE.NAME, cfg.INPUT.SIZE[0],
                                       cfg.MODEL.BACKBONE.CACHE_DIR)
        backbone = backbone.to(self.device, self.precision.model_dtype)
        learner = build_learner(cfg, backbone.arch, self.num_classes)
        self.model = SupervisedVPT(backbone, learner).to(self.device)
        count = sum(p.numel() for p in learner.parameters())
        logger.info(f"VPTSupervised: transfer {cfg.MODEL.TRANSFER_TYPE}, "
                    f"{cfg.MODEL.PROMPT.NUM_TOKENS} tokens, deep {cfg.MODEL.PROMPT.DEEP}, head "
                    f"{cfg.MODEL.HEAD.NAME or 'linear'}; {count:,} trainable values")
        labels = [item.label for item in self.dm.dataset.train_x]
        weights = class_weights(labels, self.num_classes,
                                cfg.TRAINER.VPTSUPERVISED.CLASS_WEIGHTS_TYPE)
        self.class_weight = None if weights is None else weights.to(self.device)
        self.optim = build_optimizer(learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.model_name, learner, self.optim, self.sched)

    def forward_backward(self, batch: Dict) -> Dict[str, float]:
        images, labels = self.parse_batch_train(batch)
        with self.precision.autocast():
            logits = self.model(images)
        loss = F.cross_entropy(logits.float(), labels, weight=self.class_weight)
        self.model_backward_and_update(loss)
        acc = (logits.argmax(dim=1) == labels).float().mean().item() * 100
        return {"loss": loss.item(), "acc": acc}
