"""Datasets to DataLoaders: build_dataset, DatasetWrapper, build_data_loader, DataManager."""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torchvision.transforms as T
from PIL import Image
from tabulate import tabulate
from torch.utils.data import DataLoader, Dataset as TorchDataset

from ..config import ConfigError
from ..registry import DATASET_REGISTRY
from ..utils.distributed import sampler_seed, shard_sampler
from ..utils.image import ImageReadError, read_image, to_rgb8  # noqa: F401 (importable from here)
from .dataset_base import DatasetBase
from .datum import Datum
from .errors import DatasetLayoutError
from .samplers import build_sampler
from .transforms import build_transform, input_size, interpolation_mode

logger = logging.getLogger(__name__)


def build_dataset(cfg) -> DatasetBase:
    """``DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)``."""
    if not cfg.DATASET.NAME:
        raise ConfigError(
            "DATASET.NAME is empty; pass a dataset config (--dataset-config-file) or "
            f"DATASET.NAME <name>. Registered: {', '.join(DATASET_REGISTRY.names()) or '(none)'}"
        )
    return DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)


class DatasetWrapper(TorchDataset):
    """Reads the images of a list of Datum and returns Dassl's batch dicts.

    An item is ``{"img", "label", "domain", "impath", "index"}``; a list of transforms gives
    ``img``, ``img2``, ...; ``DATALOADER.K_TRANSFORMS > 1`` (training only) makes each a list of
    K views; ``DATALOADER.RETURN_IMG0`` adds ``img0``, the image resized without augmentation.
    """

    def __init__(self, cfg, data_source: Sequence[Datum], transform=None, is_train: bool = False) -> None:
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform  # a transform, or a list/tuple of them
        self.is_train = is_train
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0
        if self.k_tfm > 1 and transform is None:
            raise ValueError(
                f"DATALOADER.K_TRANSFORMS={self.k_tfm} needs a transform to augment with; got None"
            )
        self.to_tensor = self._build_to_tensor(cfg) if self.return_img0 else None

    @staticmethod
    def _build_to_tensor(cfg) -> T.Compose:
        tfms = [T.Resize(input_size(cfg), interpolation=interpolation_mode(cfg)), T.ToTensor()]
        if "normalize" in cfg.INPUT.TRANSFORMS:
            tfms.append(T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
        return T.Compose(tfms)

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, idx: int) -> Dict:
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
        img0 = read_image(item.impath)
        if self.transform is None:
            output["img"] = img0
        elif isinstance(self.transform, (list, tuple)):
            for i, tfm in enumerate(self.transform):
                output["img" if i == 0 else f"img{i + 1}"] = self._transform_image(tfm, img0)
        else:
            output["img"] = self._transform_image(self.transform, img0)
        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output

    def _transform_image(self, tfm: Callable, img0: Image.Image):
        views = [tfm(img0) for _ in range(self.k_tfm)]
        return views[0] if len(views) == 1 else views


def build_data_loader(
    cfg,
    sampler_type: str = "SequentialSampler",
    data_source: Optional[Sequence[Datum]] = None,
    batch_size: int = 64,
    n_domain: int = 0,
    n_ins: int = 2,
    tfm=None,
    is_train: bool = True,
    dataset_wrapper=None,
    split_name: str = "data",
) -> DataLoader:
    """A DataLoader as Dassl builds it (``drop_last`` when training and the data fills a batch).

    The images ``drop_last`` leaves out each epoch are logged. Shuffling draws from the global
    torch RNG (under DDP: a DistributedSampler seeded with ``SEED`` and the epoch; a shard
    smaller than a batch is one smaller batch). ``split_name`` only names the split in messages.
    """
    if not data_source:
        raise DatasetLayoutError(
            f"The {split_name} split of dataset {cfg.DATASET.NAME!r} is empty; nothing to load"
        )
    sampler = build_sampler(sampler_type, cfg=cfg, data_source=data_source,
                            batch_size=batch_size, n_domain=n_domain, n_ins=n_ins)
    # torchrun: this rank's shard
    shard = shard_sampler(sampler, data_source, batch_size, is_train, sampler_seed(cfg.SEED),
                          split_name)
    drop_last = is_train and len(data_source if shard is sampler else shard) >= batch_size
    sampler = shard
    dropped = len(sampler) % batch_size if drop_last else 0
    if dropped:
        logger.warning(
            "%s: drop_last (Dassl) leaves out %d of %d images every epoch (batch size %d)",
            split_name, dropped, len(sampler), batch_size,
        )
    wrapper = dataset_wrapper or DatasetWrapper
    loader = DataLoader(
        wrapper(cfg, data_source, transform=tfm, is_train=is_train),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available() and cfg.USE_CUDA,
    )
    if len(loader) == 0:
        raise ValueError(
            f"The {split_name} loader has no batches ({len(data_source)} items, sampler "
            f"{sampler_type}, batch size {batch_size})"
        )
    return loader


def _loader(cfg, split: str, data, section, tfm, is_train: bool, dataset_wrapper) -> DataLoader:
    """A loader for one split with the sampler and batch size of a DATALOADER section."""
    return build_data_loader(
        cfg, sampler_type=section.SAMPLER, data_source=data, batch_size=section.BATCH_SIZE,
        n_domain=section.get("N_DOMAIN", 0), n_ins=section.get("N_INS", 2), tfm=tfm,
        is_train=is_train, dataset_wrapper=dataset_wrapper, split_name=split,
    )


class DataManager:
    """Builds the dataset, its transforms and loaders (Dassl's DataManager).

    Attributes: ``dataset``, ``train_loader_x``, ``train_loader_u`` (None without train_u),
    ``val_loader`` (None without val), ``test_loader``, ``tfm_train``, ``tfm_test``,
    ``num_classes``, ``num_source_domains``, ``lab2cname``, ``classnames``.
    """

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None) -> None:
        self.dataset = build_dataset(cfg)
        self.tfm_train = self._pick_transform(cfg, custom_tfm_train, is_train=True)
        self.tfm_test = self._pick_transform(cfg, custom_tfm_test, is_train=False)
        x, u, t = cfg.DATALOADER.TRAIN_X, cfg.DATALOADER.TRAIN_U, cfg.DATALOADER.TEST
        # A dataset may bring its own wrapper (e.g. anomaly datasets read masks too).
        ds, wrap = self.dataset, dataset_wrapper or getattr(self.dataset, "dataset_wrapper", None)
        self.train_loader_x = _loader(cfg, "train_x", ds.train_x, x, self.tfm_train, True, wrap)
        self.train_loader_u = None
        if ds.train_u:
            u = x if u.SAME_AS_X else u
            self.train_loader_u = _loader(cfg, "train_u", ds.train_u, u, self.tfm_train, True, wrap)
        self.val_loader = None
        if ds.val:
            self.val_loader = _loader(cfg, "val", ds.val, t, self.tfm_test, False, wrap)
        self.test_loader = _loader(cfg, "test", ds.test, t, self.tfm_test, False, wrap)
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    def _pick_transform(self, cfg, custom, is_train: bool):
        if custom is None:
            # A dataset may bring its own builder (anomaly datasets transform masks too).
            builder = getattr(self.dataset, "build_transform", build_transform)
            return builder(cfg, is_train=is_train)
        logger.info("Using a custom transform for %s", "training" if is_train else "testing")
        return custom

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def num_source_domains(self) -> int:
        return self._num_source_domains

    @property
    def lab2cname(self) -> Dict[int, str]:
        return self.dataset.lab2cname

    @property
    def classnames(self) -> List[str]:
        return self.dataset.classnames

    def show_dataset_summary(self, cfg) -> str:
        """Log (and return) a table: dataset, domains, # classes and the size of every split."""
        ds = self.dataset
        rows = [["Dataset", cfg.DATASET.NAME]]
        if cfg.DATASET.SOURCE_DOMAINS:
            rows.append(["Source", ", ".join(cfg.DATASET.SOURCE_DOMAINS)])
        if cfg.DATASET.TARGET_DOMAINS:
            rows.append(["Target", ", ".join(cfg.DATASET.TARGET_DOMAINS)])
        rows.append(["# classes", f"{self.num_classes:,}"])
        rows.append(["# train_x", f"{len(ds.train_x):,}"])
        if ds.train_u:
            rows.append(["# train_u", f"{len(ds.train_u):,}"])
        rows.append(["# val", f"{len(ds.val):,}" if ds.val else "0 (no val split)"])
        rows.append(["# test", f"{len(ds.test):,}"])
        table = tabulate(rows)
        logger.info("Dataset summary:\n%s", table)
        return table
