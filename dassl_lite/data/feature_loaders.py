"""Loaders over cached frozen image features (see :mod:`dassl_lite.data.feature_cache`).

- :class:`CachedEvalLoader` stands in for a val/test loader: on first use it reads the split's
  features from the cache, encodes only the images it misses (in the loader's order and batch
  size, so a cold fill computes exactly what an uncached evaluation would) and then yields
  ``{"img": features [B, E], "label": [B]}`` batches.
- :func:`cached_train_loader` trains on K augmented views per image (``TRAIN_VIEWS``), computed
  once with a per-image, per-view seed that does not depend on the run (so every run and trainer
  shares them); each epoch, every image uses one view drawn with the run's seed.
- :func:`exact_train_loader` trains on cached features when the training transform's only
  randomness is random flips (:func:`flip_probabilities`): every outcome (2 for one flip) is
  encoded once, and each item draws its flips from the global RNG exactly as torchvision's
  ``RandomHorizontalFlip`` would, so a run takes the same flips as with fresh images
  (``NUM_WORKERS 0``) and the same random stream; nothing is approximated.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from torch.utils.data import DataLoader, Dataset

from ..utils.distributed import barrier, get_rank, get_world_size, is_distributed
from ..utils.image import read_image
from .datum import Datum
from .feature_cache import CacheStats, FeatureBucket, image_identity, stable_seed
from .transforms import InstanceNormalization

logger = logging.getLogger(__name__)

Encoder = Callable[[torch.Tensor], torch.Tensor]  # images [B, 3, H, W] -> features [B, E]


class _ImageSubset(Dataset):
    """Items ``(image tensor, position)``; an item with a view name is transformed under the
    seed of that name (so a view is the same in every process), one without it as it comes."""

    def __init__(self, items: Sequence[Datum], views: Sequence[Optional[str]], tfm):
        self.items, self.views, self.tfm = items, views, tfm

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        img = read_image(self.items[i].impath)
        if self.views[i] is None:
            return self.tfm(img), i
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed also queues seeds for CUDA/XPU/MTIA,
            # recording a stack trace each time (1.5 ms per image)
            torch.default_generator.manual_seed(stable_seed(self.views[i]))
            return self.tfm(img), i


def fill_features(bucket: FeatureBucket, items: Sequence[Datum], keys: Sequence[str],
                  views: Sequence[Optional[str]], tfm, encode: Encoder, batch_size: int,
                  num_workers: int = 0, split_across_ranks: bool = False) -> tuple:
    """Features [n, E] for ``keys`` (float32, as stored), encoding and storing the missing ones;
    ``views[i]`` names the seed of item i's random transform (None: ``tfm`` draws nothing).

    ``split_across_ranks`` (every process of a torchrun job needs all of ``keys``, and every one
    calls this at the same point): each rank encodes and stores every world-size-th missing
    image, all wait for each other, then each reads the others' shares back (and encodes itself
    whatever it still misses, e.g. evicted meanwhile). Stats count this process's work."""
    features, missing = bucket.read(keys)
    stats = CacheStats(hits=len(keys) - len(missing))
    with torch.random.fork_rng(devices=[]):  # a fill leaves the run's random stream as it was
        if split_across_ranks and is_distributed():
            mine = missing[get_rank()::get_world_size()]
            if mine:
                _encode_missing(bucket, items, keys, views, tfm, encode, batch_size, num_workers,
                                None, mine)
            stats.encoded += len(mine)
            barrier()  # every rank's share is stored
            features, missing = bucket.read(keys)
        if missing:
            features = _encode_missing(bucket, items, keys, views, tfm, encode, batch_size,
                                       num_workers, features, missing)
            stats.encoded += len(missing)
    return features, stats


def _encode_missing(bucket: FeatureBucket, items: Sequence[Datum], keys: Sequence[str],
                    views: Sequence[Optional[str]], tfm, encode: Encoder, batch_size: int,
                    num_workers: int,
                    features: Optional[torch.Tensor], missing: List[int]) -> torch.Tensor:
    """Encode and store the ``missing`` rows; return ``features`` with them filled in."""
    subset = _ImageSubset([items[i] for i in missing], [views[i] for i in missing], tfm)
    loader = DataLoader(subset, batch_size=batch_size, num_workers=num_workers)
    rows: List[torch.Tensor] = []
    with torch.no_grad():
        for images, _ in loader:
            rows.append(encode(images).float().cpu())
    new = bucket.write([keys[i] for i in missing], torch.cat(rows))  # the values as stored
    if features is None:
        features = torch.zeros(len(keys), new.shape[1])
    features[missing] = new
    return features


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


def portable_name(path: str, root: str) -> str:
    """``path`` relative to the dataset root ``root`` (``/``-separated), so that names agree
    between machines and copies of a dataset; the absolute path when it lies outside."""
    root = os.path.abspath(os.path.expanduser(root)) if root else ""
    path = os.path.abspath(path)
    if root and os.path.commonpath([root, path]) == root:
        return os.path.relpath(path, root).replace(os.sep, "/")
    return path


def _keys(identities: Sequence[str], tag: str) -> List[str]:
    """Entry keys: each image file's identity (:func:`image_identity`) and the view ``tag``."""
    return [f"{ident}|{tag}" for ident in identities]


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
        # the images this process evaluates, in its order (under torchrun: its shard only); a
        # random sampler draws its order here without moving the run's random stream
        with torch.random.fork_rng(devices=[]):
            wanted = list(dict.fromkeys(self.loader.sampler))
        items = [self.items[i] for i in wanted]
        keys = _keys([image_identity(d.impath) for d in items], "test")
        feats, self.stats = fill_features(self.bucket, items, keys, [None] * len(keys), self.tfm,
                                          self.encode, self.loader.batch_size, self.num_workers)
        shard = "" if len(wanted) == len(self.items) else f" of {len(self.items):,} (this shard)"
        logger.info(f"Feature cache ({self.split}, {len(keys):,} images{shard}): "
                    f"{self.stats.hits:,} hit, {self.stats.encoded:,} encoded "
                    f"{self.bucket.stored_in()}")
        if len(wanted) < len(self.items):
            full = feats.new_zeros(len(self.items), feats.shape[1])
            full[torch.tensor(wanted)] = feats
            feats = full
        elif wanted != list(range(len(self.items))):
            feats = feats[torch.argsort(torch.tensor(wanted))]
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


class _FlipFeatureDataset(_FeatureDataset):
    """Items of :func:`exact_train_loader`: ``features`` is [N, 2**F, E], one row per outcome of
    F random flips (bit i set: flip i applied); each item draws ``torch.rand(1) < p`` per flip
    from the global RNG, in the pipeline's order, as the flips themselves would."""

    def __init__(self, features, labels: Sequence[int], flip_ps: Sequence[float]):
        super().__init__(features, labels)
        self.flip_ps = list(flip_ps)

    def __getitem__(self, idx: int) -> Dict:
        outcome = 0
        for bit, p in enumerate(self.flip_ps):
            if torch.rand(1) < p:
                outcome |= 1 << bit
        return {"img": self.features[idx][outcome], "label": self.labels[idx], "index": idx}


# Transforms that draw no random numbers, and the random flips whose outcomes can be enumerated.
DETERMINISTIC_TRANSFORMS = (T.Resize, T.CenterCrop, T.ToTensor, T.Normalize, InstanceNormalization)
FLIP_TRANSFORMS = {T.RandomHorizontalFlip: TF.hflip, T.RandomVerticalFlip: TF.vflip}


def _steps(tfm) -> list:
    return list(tfm.transforms) if isinstance(tfm, T.Compose) else [tfm]


def flip_probabilities(tfm) -> Optional[List[float]]:
    """The flip probabilities of ``tfm``, in order, when its only randomness is random flips
    (``[]``: deterministic); ``None`` when it draws anything else (crops, colour jitter, ...)."""
    probs = []
    for step in _steps(tfm):
        if type(step) in FLIP_TRANSFORMS:
            probs.append(float(step.p))
        elif type(step) not in DETERMINISTIC_TRANSFORMS:
            return None
    return probs


def outcome_transform(tfm, outcome: int) -> T.Compose:
    """``tfm`` with its random flips fixed: flip i applied when bit i of ``outcome`` is set."""
    steps, bit = [], 0
    for step in _steps(tfm):
        if type(step) in FLIP_TRANSFORMS:
            if outcome >> bit & 1:
                steps.append(T.Lambda(FLIP_TRANSFORMS[type(step)]))
            bit += 1
        else:
            steps.append(step)
    return T.Compose(steps)


def _like(loader: DataLoader, dataset: Dataset) -> DataLoader:
    """A main-process loader over ``dataset`` with ``loader``'s sampler (under torchrun: this
    rank's shard), batch size and ``drop_last``."""
    return DataLoader(dataset, batch_size=loader.batch_size, sampler=loader.sampler,
                      drop_last=loader.drop_last)


def cached_train_loader(loader: DataLoader, bucket: FeatureBucket, encode: Encoder,
                        n_views: int) -> DataLoader:
    """A training loader over ``n_views`` cached augmented views per image of the image loader
    ``loader`` (same sampler, batch size and ``drop_last``; views are read or encoded on the
    first batch); call ``loader.dataset.set_epoch`` every epoch."""
    cfg, items, tfm = loader.dataset.cfg, loader.dataset.data_source, loader.dataset.transform

    def views() -> torch.Tensor:
        expanded = [d for d in items for _ in range(n_views)]
        # seeded by the image's path under the dataset root: the same views on every machine;
        # each file's identity and name are looked up once, not once per view
        per_image = [(image_identity(d.impath), portable_name(d.impath, cfg.DATASET.ROOT))
                     for d in items]
        names = [f"{name}|view{v}" for _, name in per_image for v in range(n_views)]
        keys = [f"{ident}|{name}|view{v}" for ident, name in per_image for v in range(n_views)]
        feats, stats = fill_features(bucket, expanded, keys, names, tfm, encode,
                                     loader.batch_size, cfg.DATALOADER.NUM_WORKERS,
                                     split_across_ranks=True)
        logger.info(f"Feature cache (train_x, {len(items):,} images x {n_views} views): "
                    f"{stats.hits:,} hit, {stats.encoded:,} encoded {bucket.stored_in()}")
        return feats.view(len(items), n_views, -1)

    dataset = _FeatureDataset(views, [d.label for d in items], n_views)
    dataset.set_epoch(cfg.SEED, 0)
    return _like(loader, dataset)


def exact_train_loader(loader: DataLoader, bucket: FeatureBucket, encode: Encoder) -> DataLoader:
    """A training loader over cached features of every flip outcome of the image loader's
    transform (see :func:`flip_probabilities`; it must not be ``None``), read or encoded on the
    first batch; same sampler, batch size and ``drop_last`` as ``loader``."""
    cfg, items, tfm = loader.dataset.cfg, loader.dataset.data_source, loader.dataset.transform
    flip_ps = flip_probabilities(tfm)
    if flip_ps is None:
        raise ValueError(f"the training transform draws more than flips; it cannot be cached "
                         f"exactly: {tfm!r}")
    n_out = 2 ** len(flip_ps)

    def outcomes() -> torch.Tensor:
        per_outcome = []
        hits = encoded = 0
        identities = [image_identity(d.impath) for d in items]  # looked up once, not per outcome
        for outcome in range(n_out):
            feats, stats = fill_features(bucket, items, _keys(identities, f"flips{outcome}"),
                                         [None] * len(items),
                                         outcome_transform(tfm, outcome), encode,
                                         loader.batch_size, cfg.DATALOADER.NUM_WORKERS,
                                         split_across_ranks=True)
            per_outcome.append(feats)
            hits, encoded = hits + stats.hits, encoded + stats.encoded
        logger.info(f"Feature cache (train_x, {len(items):,} images x {n_out} flip outcomes, "
                    f"exact): {hits:,} hit, {encoded:,} encoded {bucket.stored_in()}")
        return torch.stack(per_outcome, dim=1)

    return _like(loader, _FlipFeatureDataset(outcomes, [d.label for d in items], flip_ps))
