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
- ``MODEL.TRANSFER_TYPE``: ``prompt`` (VPT), ``linear`` (no prompts: a linear probe of the
  frozen class token, the paper's "Linear" baseline) or ``end2end`` (no prompts, the whole
  backbone trained with the head: the paper's "Full" fine-tuning); KMnP/vpt's other transfer
  types are refused by name (:data:`trainers.vpt_kmnp.UNSUPPORTED_TRANSFER`).

KMnP/vpt's prompt ablations (its ``vit_prompt/vit_ablations.py``), same names and defaults:

- ``NUM_DEEP_LAYERS`` k (None: all L layers; needs ``DEEP``): prompts in layers 0..k-1 only (the
  layer-0 set plus k-1 deep sets); their outputs pass through the later blocks unreplaced;
- ``REVERSE_DEEP`` (needs ``DEEP`` and ``NUM_DEEP_LAYERS`` k): prompts in the LAST k layers only,
  k sets, no layer-0 set; as KMnP's code does, the first prompted layer overwrites the positions
  1..n of ``[CLS, patches]`` (the first n patch tokens) instead of inserting;
- ``DEEP_SHARED`` (needs ``DEEP``): one set [n, d] enters at every prompted layer (each with its
  own dropout draw);
- ``VIT_POOL_TYPE``: the head reads ``original`` the class token, ``imgprompt_pool`` the mean of
  all tokens but CLS, ``img_pool`` the mean of the patch tokens (positions n+1..), ``prompt_pool``
  the mean of the prompt tokens (positions 1..n), all after the final LayerNorm;
- ``INITIATION`` ``final-cls`` / ``cls-nolastl`` / ``cls-nofirstl``: prompts start from the
  class-embedding ``.npy`` at ``CLSEMB_PATH`` (joined to ``CLSEMB_FOLDER`` when relative; shape
  [n, L+1, D]; :func:`trainers.vpt_kmnp.load_cls_embeddings`).

Trainable values: n * d * (layers with their own set) [+ PROJECT * D + D] + head, with the linear
head D * C + C (``DEEP_SHARED``: one set; KMnP also allocates an unused deep tensor, not counted
here); ``end2end``: the backbone's values + head. The backbone is any :mod:`dassl_lite.backbones`
ViT (``MODEL.BACKBONE.NAME``: a KMnP/vpt feature name such as ``sup_vitb16_imagenet21k``,
``ToyViT``, or a checkpoint path).

Reference config names: ``MODEL.PROMPT.*`` and ``MODEL.TRANSFER_TYPE`` as KMnP/vpt; its
``DATA.CLASS_WEIGHTS_TYPE`` is ``TRAINER.VPTSUPERVISED.CLASS_WEIGHTS_TYPE``, its ``MODEL.MLP_NUM`` k
is ``MODEL.HEAD.NAME mlp`` with k entries D in ``MODEL.HEAD.HIDDEN_LAYERS``. Only ``LOCATION
prepend`` exists; ``FORWARD_DEEP_NOEXPAND True`` is refused. ``--model-dir`` also takes KMnP/vpt's
Checkpointer output (:mod:`trainers.vpt_kmnp`).
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
from dassl_lite.engine import CheckpointError, TrainerX
from dassl_lite.engine.checkpoint import load_checkpoint
from dassl_lite.optim import build_lr_scheduler, build_optimizer
from dassl_lite.registry import TRAINER_REGISTRY

from .deep_prompts import VisionPrompts
from .vpt_deep import prompt_projection, uniform_init
from .vpt_kmnp import (CLS_INITS, UNSUPPORTED_TRANSFER, check_prompt_options, clsemb_path,
                       is_kmnp_layout, kmnp_checkpoint_file, load_cls_embeddings, remap_kmnp)

logger = logging.getLogger(__name__)

TRANSFER_TYPES = ("prompt", "linear", "end2end")
HEADS = ("linear", "mlp")
POOLS = ("original", "imgprompt_pool", "img_pool", "prompt_pool")
INITIATIONS = ("random",) + CLS_INITS
CLASS_WEIGHTS = {"none": 0.0, "inv": -1.0, "inv_sqrt": -0.5}
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}
HEAD_PRIOR = 0.01  # the reference head's initial class probability (bias -log(99))
# KMnP/vpt's ViT configs (vit_configs.py): dropout_rate 0.1 after the positional embedding and
# in each MLP (after the activation and after fc2), attention_dropout_rate 0.0; only active when
# the backbone trains (end2end).
KMNP_ENCODER_DROPOUT = 0.1


@register_config_extender("VPTSupervised")
def add_vpt_supervised_config(cfg: CN) -> None:
    """``MODEL.PROMPT``, ``MODEL.TRANSFER_TYPE`` (KMnP/vpt names and defaults) and
    ``TRAINER.VPTSUPERVISED``."""
    cfg.MODEL.TRANSFER_TYPE = "prompt"  # prompt (VPT), linear (head only), end2end (full)
    cfg.MODEL.PROMPT = CN()
    cfg.MODEL.PROMPT.NUM_TOKENS = 5  # prompt tokens per layer
    cfg.MODEL.PROMPT.LOCATION = "prepend"  # [CLS, P, patches]; the only location
    cfg.MODEL.PROMPT.INITIATION = "random"  # random, final-cls, cls-nolastl, cls-nofirstl
    cfg.MODEL.PROMPT.CLSEMB_FOLDER = ""  # folder of CLSEMB_PATH when that is relative
    cfg.MODEL.PROMPT.CLSEMB_PATH = ""  # class-embedding .npy [n, L+1, D] for final-cls / cls-*
    cfg.MODEL.PROMPT.PROJECT = -1  # prompt dim with a Linear(PROJECT, D); -1 = no projection
    cfg.MODEL.PROMPT.DEEP = False  # prompts at the input of every block
    cfg.MODEL.PROMPT.NUM_DEEP_LAYERS = None  # None: all layers; k: only k layers get prompts
    cfg.MODEL.PROMPT.REVERSE_DEEP = False  # the k prompted layers are the last k
    cfg.MODEL.PROMPT.DEEP_SHARED = False  # one prompt set for every prompted layer
    cfg.MODEL.PROMPT.FORWARD_DEEP_NOEXPAND = False  # KMnP ablation; refused when True
    cfg.MODEL.PROMPT.VIT_POOL_TYPE = "original"  # original, imgprompt_pool, img_pool, prompt_pool
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
    """The trained part: ``prompts`` (None without prompts), ``head`` and, for ``end2end``, the
    ``backbone`` itself (so that the optimizer and the checkpoints hold it)."""

    def __init__(self, prompts: Optional[VisionPrompts], head: ClassHead,
                 backbone: Optional[PromptableViT] = None):
        super().__init__()
        self.prompts = prompts
        self.head = head
        self.backbone = backbone


def prompt_layout(p, depth: int) -> Dict[str, int]:
    """VisionPrompts' ``depth`` (prompt layers), ``start`` and ``shared`` from MODEL.PROMPT for a
    ViT of ``depth`` blocks; ConfigError for a NUM_DEEP_LAYERS outside 1..depth."""
    if not p.DEEP:
        return {"depth": 1, "start": None, "shared": False}
    k = depth if p.NUM_DEEP_LAYERS is None else p.NUM_DEEP_LAYERS
    if not 1 <= k <= depth:
        raise ConfigError(f"MODEL.PROMPT.NUM_DEEP_LAYERS={k} must lie in 1..{depth}, the blocks "
                          f"of the backbone")
    return {"depth": k, "start": depth - k if p.REVERSE_DEEP else None, "shared": p.DEEP_SHARED}


def build_prompts(p, arch: ViTArch) -> VisionPrompts:
    """VisionPrompts from MODEL.PROMPT (layout, projection, init: uniform or class embeddings)."""
    proj = prompt_projection(p.PROJECT, arch.width)
    prompt_dim = arch.width if proj is None else p.PROJECT
    layout = prompt_layout(p, arch.depth)
    prompts = VisionPrompts(p.NUM_TOKENS, layout["depth"], arch.width, proj=proj,
                            dropout=p.DROPOUT, init=uniform_init(arch.patch_size, prompt_dim),
                            shared=layout["shared"], start=layout["start"])
    if p.INITIATION != "random":
        ctx, deep = load_cls_embeddings(clsemb_path(p.CLSEMB_FOLDER, p.CLSEMB_PATH),
                                        p.INITIATION, p.NUM_TOKENS, arch.depth, arch.width)
        with torch.no_grad():
            prompts.ctx.copy_(ctx)
            if prompts.deep is not None:
                prompts.deep.copy_(deep)
    return prompts


def build_learner(cfg, arch: ViTArch, num_classes: int,
                  backbone: Optional[PromptableViT] = None) -> SupervisedVPTLearner:
    """Prompts and head for a ViT of ``arch`` from ``cfg`` (MODEL.PROMPT, MODEL.HEAD); for
    ``end2end`` the learner also holds ``backbone``."""
    h = cfg.MODEL.HEAD
    transfer = cfg.MODEL.TRANSFER_TYPE
    prompts = build_prompts(cfg.MODEL.PROMPT, arch) if transfer == "prompt" else None
    hidden = ()
    if h.NAME == "mlp":
        hidden = tuple(h.HIDDEN_LAYERS) or (arch.width,)
    head = ClassHead(arch.width, num_classes, hidden, h.ACTIVATION, h.BN, h.DROPOUT)
    return SupervisedVPTLearner(prompts, head, backbone if transfer == "end2end" else None)


def set_encoder_dropout(backbone: PromptableViT, rate: float) -> None:
    """KMnP/vpt's encoder dropout on the timm ViT of ``backbone`` (see KMNP_ENCODER_DROPOUT)."""
    backbone.vit.pos_drop.p = rate
    for block in backbone.vit.blocks:
        block.mlp.drop1.p = block.mlp.drop2.p = rate


def pool_tokens(tokens: Tensor, pool: str, n: int) -> Tensor:
    """KMnP/vpt's ``VIT_POOL_TYPE`` on the normalised sequence [B, 1 + n + P, D] -> [B, D]."""
    if pool == "original":
        return tokens[:, 0]
    if pool == "imgprompt_pool":
        return tokens[:, 1:].mean(dim=1)
    if pool == "img_pool":
        return tokens[:, n + 1:].mean(dim=1)
    if pool == "prompt_pool":
        return tokens[:, 1:n + 1].mean(dim=1)
    raise ConfigError(f"MODEL.PROMPT.VIT_POOL_TYPE must be one of {', '.join(POOLS)}; got {pool!r}")


class SupervisedVPT(nn.Module):
    """A :class:`PromptableViT` and a :class:`SupervisedVPTLearner`. The backbone is frozen and
    always in eval mode unless the learner holds it (``end2end``); the head reads
    ``pool_tokens(.., pool)`` of the prompted sequence, or the class token without prompts."""

    def __init__(self, backbone: PromptableViT, learner: SupervisedVPTLearner,
                 pool: str = "original"):
        super().__init__()
        self.frozen = learner.backbone is None
        self.backbone = backbone.requires_grad_(not self.frozen)
        if self.frozen:
            self.backbone.eval()
        self.learner = learner
        self.pool = pool

    def train(self, mode: bool = True) -> "SupervisedVPT":
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # frozen: no dropout / statistics updates (as the reference)
        return self

    def features(self, images: Tensor) -> Tensor:
        """The head's input: the pooled sequence after the final norm, with the prompts."""
        prompts = self.learner.prompts
        if prompts is None:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
                return self.backbone(images)
        tokens = self.backbone.tokens(images, **prompts.vision_inputs(images.shape[0]))
        return pool_tokens(tokens, self.pool, prompts.n_ctx)

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
    """VPT on a supervised ViT with a head (module docstring); checkpoints (prompts + head, plus
    the backbone for ``end2end``) in ``prompt_learner/``; ``--model-dir`` also takes KMnP/vpt's
    Checkpointer output folder or file (:mod:`trainers.vpt_kmnp`)."""

    precision_key = "TRAINER.VPTSUPERVISED.PREC"
    model_name = "prompt_learner"

    def check_cfg(self, cfg) -> None:
        p = cfg.MODEL.PROMPT
        transfer = cfg.MODEL.TRANSFER_TYPE
        if transfer in UNSUPPORTED_TRANSFER:
            raise ConfigError(f"MODEL.TRANSFER_TYPE {transfer!r} (KMnP/vpt) is not supported: "
                              f"{UNSUPPORTED_TRANSFER[transfer]}; use one of "
                              f"{', '.join(TRANSFER_TYPES)}")
        check_choice("MODEL.TRANSFER_TYPE", transfer, TRANSFER_TYPES)
        prec = cfg.TRAINER.VPTSUPERVISED.PREC
        if transfer == "end2end" and prec in ("fp16", "bf16"):
            raise ConfigError(f"MODEL.TRANSFER_TYPE end2end trains the backbone, whose weights "
                              f"TRAINER.VPTSUPERVISED.PREC {prec} keeps in half precision; use "
                              f"fp32 or amp")
        check_choice("MODEL.PROMPT.LOCATION", p.LOCATION, ("prepend",))
        check_choice("MODEL.PROMPT.INITIATION", p.INITIATION, INITIATIONS)
        check_choice("MODEL.PROMPT.VIT_POOL_TYPE", p.VIT_POOL_TYPE, POOLS)
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
        check_prompt_options(p, transfer)
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
        if cfg.MODEL.TRANSFER_TYPE == "end2end":
            set_encoder_dropout(backbone, KMNP_ENCODER_DROPOUT)
        learner = build_learner(cfg, backbone.arch, self.num_classes, backbone)
        self.model = SupervisedVPT(backbone, learner, cfg.MODEL.PROMPT.VIT_POOL_TYPE)
        self.model.to(self.device)
        count = sum(p.numel() for p in learner.parameters())
        p = cfg.MODEL.PROMPT
        prompts = (f"{p.NUM_TOKENS} tokens, deep {p.DEEP} (layers {p.NUM_DEEP_LAYERS}, reverse "
                   f"{p.REVERSE_DEEP}, shared {p.DEEP_SHARED}), pool {p.VIT_POOL_TYPE}, "
                   if learner.prompts is not None else "no prompts, ")
        logger.info(f"VPTSupervised: transfer {cfg.MODEL.TRANSFER_TYPE}, {prompts}head "
                    f"{cfg.MODEL.HEAD.NAME or 'linear'}; {count:,} trainable values")
        labels = [item.label for item in self.dm.dataset.train_x]
        weights = class_weights(labels, self.num_classes,
                                cfg.TRAINER.VPTSUPERVISED.CLASS_WEIGHTS_TYPE)
        self.class_weight = None if weights is None else weights.to(self.device)
        self.optim = build_optimizer(learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.model_name, learner, self.optim, self.sched)

    def remap_checkpoint_state(self, name: str,
                               state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        if is_kmnp_layout(state_dict):
            state_dict = remap_kmnp(state_dict, self.model_state_dict(name),
                                    shared=self.cfg.MODEL.PROMPT.DEEP_SHARED,
                                    end2end=self.cfg.MODEL.TRANSFER_TYPE == "end2end")
        return super().remap_checkpoint_state(name, state_dict)

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        """Our run folder, or KMnP/vpt's Checkpointer output: a ``.pth`` file or its
        ``OUTPUT_DIR`` (the file its ``last_checkpoint`` names)."""
        path = kmnp_checkpoint_file(directory, self.model_name)
        if path is None:
            return super().load_model(directory, epoch)
        if epoch is not None:
            raise CheckpointError(f"--load-epoch {epoch}: KMnP/vpt's Checkpointer files in "
                                  f"{directory!r} carry no epoch; drop --load-epoch")
        ckpt = load_checkpoint(path)
        self._load_into(self.model_name, ckpt["state_dict"], path)
        logger.info(f"Loaded KMnP/vpt checkpoint {path} into {self.model_name!r}")

    def forward_backward(self, batch: Dict) -> Dict[str, float]:
        images, labels = self.parse_batch_train(batch)
        with self.precision.autocast():
            logits = self.model(images)
        loss = F.cross_entropy(logits.float(), labels, weight=self.class_weight)
        self.model_backward_and_update(loss)
        acc = (logits.argmax(dim=1) == labels).float().mean().item() * 100
        return {"loss": loss.item(), "acc": acc}
