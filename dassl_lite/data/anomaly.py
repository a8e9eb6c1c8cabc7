"""Anomaly detection data: records with masks, mask-aware transforms and the loader wrapper.

A record (:class:`AnomalyDatum`) is a :class:`Datum` whose label is the image-level state
(0 normal, 1 anomalous; class names ``ANOMALY_STATES``) plus a category (the object class,
e.g. "bottle"), a defect type ("" for normal images) and an optional mask path. Like every
Datum it never touches the disk; the mask is read with the image.

Images and masks go through one :class:`AnomalyTransform`, so they stay aligned: the image is
resized straight to ``INPUT.SIZE`` with ``INPUT.INTERPOLATION`` (as AF-CLIP/AnomalyCLIP do; no
crop), the mask with ``INPUT.MASK_INTERPOLATION``: ``nearest``, or ``bilinear``/``bicubic``
on the 0/1 mask followed by ``>= 0.5`` (AF-CLIP resizes masks bicubically and thresholds at
0.5). ``random_flip`` flips both; ``normalize`` applies to the image only.

A loader item is ``{"img" [3, H, W], "mask" [1, H, W] float 0/1, "label", "category",
"defect", "impath", "index"}``.
"""
from __future__ import annotations

import operator
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

from ..config import ConfigError
from .data_manager import DatasetWrapper, read_image
from .dataset_base import DatasetBase
from .datum import Datum
from .errors import ImageReadError
from .transforms import INTERPOLATION_MODES, input_size, interpolation_mode

__all__ = ["ANOMALY_STATES", "AnomalyDatum", "AnomalyDataset", "AnomalyTransform",
           "AnomalyDatasetWrapper", "read_mask", "MASK_MODES"]

ANOMALY_STATES = ("normal", "anomalous")  # class name of label 0 and 1
MASK_MODES = ("nearest", "bilinear", "bicubic")  # INPUT.MASK_INTERPOLATION
SUPPORTED_TRANSFORMS = ("normalize", "random_flip")  # INPUT.TRANSFORMS an anomaly run accepts


class AnomalyDatum(Datum):
    """An image with its state label (0 normal, 1 anomalous), category, defect and mask path.

    ``classname`` is the state name (``ANOMALY_STATES[label]``); ``mask_path`` is "" when the
    image has no mask (normal images: an all-zero mask is used). Immutable and hashable.
    """

    __slots__ = ("_category", "_defect", "_mask_path")

    def __init__(self, impath: Union[str, os.PathLike], label: int, category: str,
                 defect: str = "", mask_path: Union[str, os.PathLike] = "") -> None:
        label = operator.index(label)
        if label not in (0, 1):
            raise ValueError(f"AnomalyDatum label must be 0 (normal) or 1 (anomalous); got {label}")
        if not isinstance(category, str) or not category:
            raise ValueError(f"AnomalyDatum category must be a non-empty str; got {category!r}")
        super().__init__(impath, label, 0, ANOMALY_STATES[label])
        self._category = category
        self._defect = str(defect)
        self._mask_path = os.fspath(mask_path)

    @property
    def category(self) -> str:
        return self._category

    @property
    def defect(self) -> str:
        return self._defect

    @property
    def mask_path(self) -> str:
        return self._mask_path

    def _key(self) -> tuple:
        return super()._key() + (self._category, self._defect, self._mask_path)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AnomalyDatum):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"AnomalyDatum(impath={self.impath!r}, label={self.label}, "
                f"category={self._category!r}, defect={self._defect!r}, "
                f"mask_path={self._mask_path!r})")

    def __getstate__(self) -> tuple:
        return self._key()

    def __setstate__(self, state: tuple) -> None:
        (self._impath, self._label, self._domain, self._classname,
         self._category, self._defect, self._mask_path) = state


class AnomalyDataset(DatasetBase):
    """A dataset of :class:`AnomalyDatum` (``task = "anomaly"``).

    ``categories``: the sorted categories of the test split (what the evaluator reports).
    Loaders use :class:`AnomalyDatasetWrapper` and :meth:`build_transform` (the DataManager
    asks the dataset for both).
    """

    task = "anomaly"

    def __init__(self, train_x: Optional[List[AnomalyDatum]] = None,
                 val: Optional[List[AnomalyDatum]] = None,
                 test: Optional[List[AnomalyDatum]] = None) -> None:
        super().__init__(train_x=train_x, val=val, test=test)
        self._lab2cname = {i: name for i, name in enumerate(ANOMALY_STATES)}
        self._classnames = list(ANOMALY_STATES)
        self._num_classes = len(ANOMALY_STATES)

    @property
    def categories(self) -> List[str]:
        return sorted({d.category for d in self.test})

    @property
    def train_categories(self) -> List[str]:
        return sorted({d.category for d in self.train_x})

    @staticmethod
    def dataset_wrapper(cfg, data_source, transform=None, is_train: bool = False):
        """The loader's dataset (reads images and masks)."""
        return AnomalyDatasetWrapper(cfg, data_source, transform=transform, is_train=is_train)

    @staticmethod
    def build_transform(cfg, is_train: bool = True) -> "AnomalyTransform":
        """The joint image/mask transform of ``cfg``."""
        return AnomalyTransform.from_cfg(cfg, is_train)


def read_mask(path: str, impath: str = "") -> Image.Image:
    """The mask at ``path`` as a binary ``L`` image (255 where the file is non-zero).

    Any non-zero value counts as a defect (VisA masks hold several ids). A missing or
    unreadable file raises :class:`ImageReadError` naming it and its image.
    """
    of = f" (the mask of image {impath})" if impath else ""
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L") if img.mode not in ("L", "I", "I;16", "P", "1")
                             else img)
    except FileNotFoundError:
        raise ImageReadError(f"Cannot read mask {path}{of}: file not found", path) from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"Cannot read mask {path}{of}: {type(e).__name__}: {e}", path) from e
    return Image.fromarray(((arr != 0) * 255).astype(np.uint8), mode="L")


class AnomalyTransform:
    """Resize image and mask to ``size`` together; optional joint horizontal flip; image
    ``ToTensor`` (+ normalisation). Returns ``(image [3, H, W], mask [1, H, W] float 0/1)``."""

    def __init__(self, size: Tuple[int, int], interpolation: str = "bicubic",
                 mask_interpolation: str = "bilinear", flip: bool = False,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None):
        if mask_interpolation not in MASK_MODES:
            raise ConfigError(f"INPUT.MASK_INTERPOLATION must be one of {', '.join(MASK_MODES)}; "
                              f"got {mask_interpolation!r}")
        self.size = tuple(size)
        self.interpolation = INTERPOLATION_MODES[interpolation]
        self.mask_interpolation = mask_interpolation
        self.flip = flip
        self.mean, self.std = mean, std

    @classmethod
    def from_cfg(cls, cfg, is_train: bool) -> "AnomalyTransform":
        """From ``INPUT.SIZE``, ``INPUT.INTERPOLATION``, ``INPUT.MASK_INTERPOLATION`` and
        ``INPUT.TRANSFORMS`` (only ``normalize`` and ``random_flip`` are supported)."""
        choices = list(cfg.INPUT.TRANSFORMS)
        odd = [c for c in choices if c not in SUPPORTED_TRANSFORMS]
        if odd:
            raise ConfigError(f"anomaly datasets support INPUT.TRANSFORMS among "
                              f"{', '.join(SUPPORTED_TRANSFORMS)} (applied to image and mask "
                              f"together); got {odd}")
        interpolation_mode(cfg)  # validates the name
        norm = "normalize" in choices
        return cls(input_size(cfg), cfg.INPUT.INTERPOLATION, cfg.INPUT.MASK_INTERPOLATION,
                   flip=is_train and "random_flip" in choices,
                   mean=cfg.INPUT.PIXEL_MEAN if norm else None,
                   std=cfg.INPUT.PIXEL_STD if norm else None)

    def resize_mask(self, mask: Image.Image) -> torch.Tensor:
        """A binary ``L`` mask -> [1, H, W] float 0/1 at ``size``."""
        m = torch.from_numpy(np.asarray(mask, dtype=np.uint8) > 0).float()[None, None]
        if tuple(m.shape[-2:]) == self.size:
            return m[0]
        if self.mask_interpolation == "nearest":
            return F.interpolate(m, size=self.size, mode="nearest")[0]
        out = F.interpolate(m, size=self.size, mode=self.mask_interpolation, align_corners=False)
        return (out[0] >= 0.5).float()

    def __call__(self, img: Image.Image, mask: Image.Image) -> Tuple[torch.Tensor, torch.Tensor]:
        if img.size != mask.size:
            raise ValueError(f"image and mask sizes differ: {img.size} vs {mask.size} (W, H)")
        image = TF.to_tensor(TF.resize(img, list(self.size), interpolation=self.interpolation))
        m = self.resize_mask(mask)
        if self.flip and torch.rand(()).item() < 0.5:
            image, m = image.flip(-1), m.flip(-1)
        if self.mean is not None:
            image = TF.normalize(image, self.mean, self.std)
        return image, m

    def __repr__(self) -> str:
        return (f"AnomalyTransform(size={self.size}, interpolation={self.interpolation.value}, "
                f"mask={self.mask_interpolation}, flip={self.flip}, "
                f"normalize={self.mean is not None})")


class AnomalyDatasetWrapper(DatasetWrapper):
    """Reads image and mask of each :class:`AnomalyDatum` and applies the joint transform.

    An anomalous image without a mask path is an error (pixel metrics need one); a normal
    image gets an all-zero mask.
    """

    def __getitem__(self, idx: int) -> Dict:
        item = self.data_source[idx]
        img = read_image(item.impath)
        if item.mask_path:
            mask = read_mask(item.mask_path, item.impath)
        elif item.label == 1:
            raise ImageReadError(f"Anomalous image {item.impath} has no mask path "
                                 f"(category {item.category!r}, defect {item.defect!r})",
                                 item.impath)
        else:
            mask = Image.new("L", img.size, 0)
        if not isinstance(self.transform, AnomalyTransform):
            raise TypeError(f"anomaly data needs an AnomalyTransform (image and mask together); "
                            f"got {type(self.transform).__name__}")
        image, mask_t = self.transform(img, mask)
        return {"img": image, "mask": mask_t, "label": item.label, "category": item.category,
                "defect": item.defect, "impath": item.impath, "index": idx}
