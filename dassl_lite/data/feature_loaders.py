"""Loaders over cached frozen image features (see :mod:`dassl_lite.data.feature_cache`).

- :class:`CachedEvalLoader` stands in for a val/test loader: on first use it reads the split's
  features from the cache, encodes only the images it misses (in the loader's order and batch
  size, so a cold fill computes exactly what an uncached evaluation would) and then yields
  ``{"img": features [B, E], "label": [B]}`` batches.
- :func:`cached_train_loader` trains on K augmented views per image (``TRAIN_VIEWS``), computed
  once with a per-image, per-view seed that does not depend on the run (so every run and trainer
  shares them); each epoch, every image uses one view drawn with the run's seed.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .data_manager import read_image
from .datum import Datum
from .feature_cache import CacheStats, FeatureBucket, image_identity, stable_seed
from .samplers import build_sampler

logger = logging.getLogger(__name__)

Encoder = Callable[[torch.Tensor], torch.Tensor]  # images [B, 3, H, W] -> features [B, E]


class _ImageSubset(Dataset):
    """Items ``(image tensor, position)`` of (datum, view) pairs; a view >= 0 is drawn under its
    own seed so that it is the same in every process."""

    def __init__(self, items: Sequence[Datum], keys: Sequence[str], views: Sequence[int], tfm):
        self.items, self.keys, self.views, self.tfm = items, keys, views, tfm

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        img = read_image(self.items[i].impath)
        if self.views[i] < 0:
            return self.tfm(img), i
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stable_seed(self.keys[i]))
            return self.tfm(img), i


def fill_features(bucket: FeatureBucket, items: Sequence[Datum], keys: Sequence[str],
                  views: Sequence[int], tfm, encode: Encoder, batch_size: int,
                  num_workers: int = 0) -> tuple:
    """Features [n, E] for ``keys`` (float32, as stored), encoding and storing the missing ones."""
    features, missing = bucket.read(keys)
    stats = CacheStats(hits=len(keys) - len(missing), encoded=len(missing))
    if missing:
        subset = _ImageSubset([items[i] for i in missing], [keys[i] for i in missing],
                              [views[i] for i in missing], tfm)
        loader = DataLoader(subset, batch_size=batch_size, num_workers=num_workers)
        rows: List[torch.Tensor] = []
        with torch.no_grad():
            for images, _ in loader:
                rows.append(encode(images).float().cpu())
        new = torch.cat(rows)
        new = bucket.write([keys[i] for i in missing], new)  # the values as stored
        if features is None:
            features = torch.zeros(len(keys), new.shape[1])
        features[missing] = new
    return features, stats


class _FeatureDataset(Dataset):
    """``{"img": feature, "label", "index"}`` items. ``features`` is [N, E], or [N, K, E] views
    of which each epoch uses one per image (:meth:`set_epoch`); it may be given as a function,
    called on first access (so a run that never trains never encodes its training views)."""

    def __init__(self, features, labels: Sequence[int], n_views: int = 0):
        self._features = features
        self.labels = list(labels)
        self.n_views = n_views
        self.choice: Optional[torch.Tensor] = None

    @property
    def features(self) -> torch.Tensor:
        if callable(self._features):
            self._features = self._features()
        return self._features

    def set_epoch(self, seed: int, epoch: int) -> None:
        """Draw the view of every image for this epoch from (run seed, epoch)."""
        g = torch.Generator().manual_seed(stable_seed("train_views", seed, epoch))
        self.choice = torch.randint(self.n_views, (len(self.labels),), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> Dict:
        feat = self.features[idx]
        if self.n_views:  # [K, E]: this epoch's view
            feat = feat[int(self.choice[idx])]
        return {"img": feat, "label": self.labels[idx], "index": idx}


def _keys(items: Sequence[Datum], tag: str) -> List[str]:
    return [f"{image_identity(d.impath)}|{tag}" for d in items]


class CachedEvalLoader:
    """A val/test loader over cached features, filled on first iteration (see module doc)."""

    def __init__(self, split: str, loader: DataLoader, bucket: FeatureBucket, encode: Encoder,
                 num_workers: int = 0):
        self.split, self.loader, self.bucket, self.encode = split, loader, bucket, encode
        self.num_workers = num_workers
        self.items: Sequence[Datum] = loader.dataset.data_source
        self.tfm = loader.dataset.transform
        self._features: Optional[DataLoader] = None
        self.stats = CacheStats()

    def _build(self) -> DataLoader:
        keys = _keys(self.items, "test")
        feats, self.stats = fill_features(self.bucket, self.items, keys, [-1] * len(keys),
                                          self.tfm, self.encode, self.loader.batch_size,
                                          self.num_workers)
        logger.info(f"Feature cache ({self.split}, {len(keys):,} images): {self.stats.hits:,} "
                    f"hit, {self.stats.encoded:,} encoded and stored in {self.bucket.dir}")
        return DataLoader(_FeatureDataset(feats, [d.label for d in self.items]),
                          batch_size=self.loader.batch_size, sampler=self.loader.sampler)

    def __iter__(self):
        if self._features is None:
            self._features = self._build()
        return iter(self._features)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def dataset(self):
        """The image loader's dataset (its length and items are the split's)."""
        return self.loader.dataset

    @property
    def sampler(self):
        return self.loader.sampler


def cached_train_loader(cfg, items: Sequence[Datum], bucket: FeatureBucket, tfm, encode: Encoder,
                        n_views: int, section) -> DataLoader:
    """A training loader over ``n_views`` cached augmented views per image (same sampler,
    batch size and ``drop_last`` as the image loader; views are read or encoded on the first
    batch); call ``loader.dataset.set_epoch`` every epoch."""

    def views() -> torch.Tensor:
        keys = [f"{image_identity(d.impath)}|view{v}" for d in items for v in range(n_views)]
        view_ids = [v for _ in items for v in range(n_views)]
        expanded = [d for d in items for _ in range(n_views)]
        feats, stats = fill_features(bucket, expanded, keys, view_ids, tfm, encode,
                                     section.BATCH_SIZE, cfg.DATALOADER.NUM_WORKERS)
        logger.info(f"Feature cache (train_x, {len(items):,} images x {n_views} views): "
                    f"{stats.hits:,} hit, {stats.encoded:,} encoded and stored in {bucket.dir}")
        return feats.view(len(items), n_views, -1)

    dataset = _FeatureDataset(views, [d.label for d in items], n_views)
    dataset.set_epoch(cfg.SEED, 0)
    from ..engine.distributed import sampler_seed, shard_sampler  # torchrun: this rank's shard

    sampler = build_sampler(section.SAMPLER, cfg=cfg, data_source=items,
                            batch_size=section.BATCH_SIZE, n_domain=section.get("N_DOMAIN", 0),
                            n_ins=section.get("N_INS", 2))
    shard = shard_sampler(sampler, items, section.BATCH_SIZE, True, sampler_seed(cfg.SEED),
                          "train_x")
    drop_last = len(items if shard is sampler else shard) >= section.BATCH_SIZE
    return DataLoader(dataset, batch_size=section.BATCH_SIZE, sampler=shard, drop_last=drop_last)
