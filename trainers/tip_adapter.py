"""Tip-Adapter and Tip-Adapter-F (Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP
for Few-shot Classification", ECCV 2022; reference code gaopengcuhk/Tip-Adapter).

A key-value cache built from the few-shot training images is added to zero-shot CLIP::

    keys   K [N, E]  mean over AUGMENT_EPOCH augmented views of each training image's CLIP
                     feature (not normalised per view), then L2-normalised
    values V [N, C]  one-hot labels
    logits = s * f T^T + alpha * exp(-beta * (1 - f K^T)) V

with f the normalised test feature, T the zero-shot text features of the dataset's hand-written
prompt and s CLIP's logit scale (upstream writes 100, OpenAI CLIP's value). ``alpha`` and
``beta`` are searched on the val split over upstream's grids
(``[0.1 + i * (SEARCH_SCALE - 0.1) / SEARCH_STEP for i < SEARCH_STEP]``, beta first, the first
best kept). Tip-Adapter-F also learns K (initialised from the cache) with the CLIP features
fixed, at ``INIT_ALPHA``/``INIT_BETA``, then searches on val.

Differences from upstream, on purpose: the final model is not picked by test accuracy (upstream
keeps the best epoch of Tip-Adapter-F on the test set; here ``TEST.FINAL_MODEL`` decides, on val
or last epoch); the schedule is Dassl's (cosine per epoch, not per iteration; AdamW eps from
PyTorch, upstream 1e-4).

Unseen classes: the cache holds the classes it was built from, by name. At evaluation its values
are mapped onto the current classes; a class without cached images gets no cache logit. On
base-to-novel's new classes the cache therefore adds nothing and the model is zero-shot CLIP
(logged as a warning); the searched ``alpha``/``beta`` travel in the checkpoint.
"""
from __future__ import annotations

import logging
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP
from dassl_lite.config import register_config_extender
from dassl_lite.registry import TRAINER_REGISTRY

from .clip_trainer import ClipPromptTrainer
from .fitted import ClassIndex, FittedCLIPTrainer, FittedHeadMixin, extract_features
from .zsclip import ZeroshotCLIP, ZeroshotCLIPModel

logger = logging.getLogger(__name__)


@register_config_extender("TipAdapter")
def add_tip_adapter_config(cfg: CN) -> None:
    """``TRAINER.TIP_ADAPTER``: upstream's YAML keys (upper-cased), ImageNet's values."""
    cfg.TRAINER.TIP_ADAPTER = CN()
    cfg.TRAINER.TIP_ADAPTER.INIT_ALPHA = 1.17  # residual ratio of the cache logits
    cfg.TRAINER.TIP_ADAPTER.INIT_BETA = 1.0  # sharpness of the affinities
    cfg.TRAINER.TIP_ADAPTER.SEARCH_HP = True  # search alpha and beta on the val split
    cfg.TRAINER.TIP_ADAPTER.SEARCH_SCALE = [7.0, 3.0]  # largest beta, largest alpha
    cfg.TRAINER.TIP_ADAPTER.SEARCH_STEP = [200, 20]  # grid sizes of beta and alpha
    cfg.TRAINER.TIP_ADAPTER.AUGMENT_EPOCH = 10  # augmented views averaged per cache key
    cfg.TRAINER.TIP_ADAPTER.PREC = "fp16"  # fp16, fp32, amp, bf16


def tip_logits(features: Tensor, text: Tensor, keys: Tensor, values: Tensor, alpha: float,
               beta: float, scale: float) -> Tensor:
    """``scale * f T^T + alpha * exp(-beta * (1 - f K^T)) V`` for normalised features f [B, E],
    text features T [C, E], cache keys K [N, E] and values V [N, C]."""
    clip_logits = scale * features @ text.t()
    affinity = features @ keys.t()
    return clip_logits + alpha * torch.exp(-beta * (1 - affinity)) @ values


def search_grid(scale: float, steps: int) -> List[float]:
    """Upstream's search grid: ``0.1 + i * (scale - 0.1) / steps`` for i in range(steps)."""
    return [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]


@torch.no_grad()
def search_alpha_beta(features: Tensor, labels: Tensor, text: Tensor, keys: Tensor,
                      values: Tensor, scale: float, search_scale: Sequence[float],
                      search_step: Sequence[int]) -> Tuple[float, float, float]:
    """The (alpha, beta, accuracy %) of the grid with the best accuracy on (features, labels);
    beta is the outer loop and the first best is kept, as upstream."""
    clip_logits = scale * features @ text.t()
    affinity = features @ keys.t()
    best = (0.0, 0.0, -1.0)
    for beta in search_grid(search_scale[0], int(search_step[0])):
        cache_logits = torch.exp(-beta * (1 - affinity)) @ values
        for alpha in search_grid(search_scale[1], int(search_step[1])):
            pred = (clip_logits + alpha * cache_logits).argmax(dim=1)
            acc = (pred == labels).float().mean().item() * 100
            if acc > best[2]:
                best = (alpha, beta, acc)
    return best


class TipCache(nn.Module):
    """The cache: keys [N, E] (a parameter when learnable), labels [N], the class names the
    labels index, and alpha/beta. Everything is saved in checkpoints."""

    feature_width_keys = ("cache_keys",)

    def __init__(self, width: int, size: int, learnable: bool, alpha: float, beta: float):
        super().__init__()
        keys = torch.zeros(size, width)
        if learnable:
            self.cache_keys = nn.Parameter(keys)
        else:
            self.register_buffer("cache_keys", keys)
        self.register_buffer("cache_labels", torch.zeros(size, dtype=torch.long))
        self.register_buffer("classnames", ClassIndex.encode([]))
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.register_buffer("beta", torch.tensor(float(beta)))

    def fill(self, keys: Tensor, labels: Tensor, classnames: Sequence[str]) -> None:
        """Store a built cache (keys are copied into the existing tensor when shapes agree)."""
        if self.cache_keys.shape == keys.shape:
            self.cache_keys.data.copy_(keys)
        else:
            self.cache_keys.data = keys.to(self.cache_keys.device).clone()
        self.cache_labels = labels.to(self.cache_labels.device)
        self.classnames = ClassIndex.encode(classnames).to(self.classnames.device)

    def values(self, classnames: Sequence[str]) -> Tensor:
        """One-hot values [N, len(classnames)]: the cached labels mapped onto ``classnames``."""
        cached = ClassIndex.decode(self.classnames)
        if not cached:  # nothing cached yet
            return torch.zeros(len(self.cache_labels), len(classnames), device=self.cache_keys.device)
        mapping = ClassIndex.mapping(cached, classnames, self.cache_keys.device)
        return F.one_hot(self.cache_labels, len(cached)).float() @ mapping


class TipAdapterModel(ZeroshotCLIPModel):
    """Zero-shot CLIP plus the cache (``fitted``)."""

    def __init__(self, clip_model: CLIP, classnames: Sequence[str], templates: Sequence[str],
                 cache: TipCache):
        super().__init__(clip_model, classnames, templates)
        self.classnames = list(classnames)
        self.fitted = cache

    def forward(self, images: Tensor) -> Tensor:
        features = self.image_features(images).float()
        scale = self.clip.logit_scale.exp().float()
        cache = self.fitted
        return tip_logits(features, self.fixed_text_features, cache.cache_keys.float(),
                          cache.values(self.classnames), cache.alpha, cache.beta, scale)


class TipAdapterMixin(FittedHeadMixin):
    """Cache building and the alpha/beta search shared by TipAdapter and TipAdapterF."""

    model_name = "tip_adapter"
    precision_key = "TRAINER.TIP_ADAPTER.PREC"
    learnable_keys = False
    prompted_image_encoder = False  # normalised frozen features only: the feature cache serves

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> TipAdapterModel:
        c = self.cfg.TRAINER.TIP_ADAPTER
        size = len(self.dm.dataset.train_x) if self.learnable_keys else 0
        cache = TipCache(clip_model.embed_dim, size, self.learnable_keys, c.INIT_ALPHA, c.INIT_BETA)
        return TipAdapterModel(clip_model, classnames, self.templates(), cache).to(self.device)

    def build_cache(self) -> None:
        """Keys from ``AUGMENT_EPOCH`` passes over the training images with the training
        transform (the same image order each pass); labels from the first pass."""
        views, labels = [], None
        n_views = self.cfg.TRAINER.TIP_ADAPTER.AUGMENT_EPOCH
        for _ in range(n_views):
            feats, labs = extract_features(self, self.dm.dataset.train_x, self.dm.tfm_train,
                                           normalize=False)
            views.append(feats)
            labels = labs if labels is None else labels
        keys = torch.stack(views).mean(dim=0)
        keys = keys / keys.norm(dim=-1, keepdim=True)
        self.unwrapped_model.fitted.fill(keys, labels, self.dm.dataset.classnames)
        logger.info(f"Cache: {keys.shape[0]} keys of width {keys.shape[1]} "
                    f"({n_views} augmented views each)")

    @torch.no_grad()
    def search_hp(self) -> None:
        """Search alpha and beta on the val split (``SEARCH_HP``); keep the initial values
        when off or when the dataset has no val split."""
        c, cache = self.cfg.TRAINER.TIP_ADAPTER, self.unwrapped_model.fitted
        if not c.SEARCH_HP or not self.dm.dataset.val:
            reason = "SEARCH_HP is False" if not c.SEARCH_HP else "the dataset has no val split"
            logger.warning(f"Not searching alpha/beta ({reason}); alpha={float(cache.alpha):.2f}, "
                           f"beta={float(cache.beta):.2f}")
            return
        model = self.unwrapped_model
        feats, labels = extract_features(self, self.dm.dataset.val, self.dm.tfm_test)
        alpha, beta, acc = search_alpha_beta(
            feats, labels, model.fixed_text_features, cache.cache_keys.float(),
            cache.values(model.classnames), model.clip.logit_scale.exp().float(),
            c.SEARCH_SCALE, c.SEARCH_STEP)
        cache.alpha.fill_(alpha)
        cache.beta.fill_(beta)
        logger.info(f"Searched on val: alpha={alpha:.2f}, beta={beta:.2f} "
                    f"(val accuracy {acc:.2f}%)")

    def before_test(self) -> None:
        model = self.unwrapped_model
        cached = ClassIndex.decode(model.fitted.classnames)
        known = set(cached) & set(model.classnames)
        if len(known) < len(model.classnames):
            logger.warning(f"{len(model.classnames) - len(known)} of {len(model.classnames)} "
                           f"classes have no images in the cache (built from {len(cached)} "
                           f"classes): they get zero-shot CLIP logits only")


@TRAINER_REGISTRY.register()
class TipAdapter(TipAdapterMixin, FittedCLIPTrainer):
    """Training-free Tip-Adapter; config section ``TRAINER.TIP_ADAPTER``."""

    def fit(self) -> None:
        self.build_cache()
        self.search_hp()


@TRAINER_REGISTRY.register()
class TipAdapterF(TipAdapterMixin, ClipPromptTrainer):
    """Tip-Adapter-F: the cache keys are fine-tuned (``OPTIM``: upstream AdamW, lr 0.001,
    20 epochs, batch 256), then alpha/beta are searched on val. The cache is built at the first
    training step (so evaluating a checkpoint never builds one from the evaluated data)."""

    model_name = "tip_adapter_f"
    learnable_keys = True
    cache_text_in_eval = False  # the text features are fixed
    fixed_checkpoint_keys: Sequence[str] = ()
    templates = ZeroshotCLIP.templates

    def trainable_module(self) -> nn.Module:
        return self.model.fitted

    def forward_backward(self, batch):
        """Build the cache at the first step unless it was loaded (resume, INIT_WEIGHTS)."""
        if not ClassIndex.decode(self.unwrapped_model.fitted.classnames):
            self.build_cache()
        return super().forward_backward(batch)

    def after_epoch(self) -> None:
        if self.epoch + 1 == self.max_epoch:
            self.search_hp()
        super().after_epoch()
