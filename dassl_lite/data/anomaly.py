"""Anomaly detection data: records with masks, mask-aware transforms and the loader wrapper.

A record (:class:`AnomalyDatum`) is a :class:`Datum` whose label is the image-level state
(0 normal, 1 anomalous; class names ``ANOMALY_STATES``) plus a category (the object class,
e.g. "bottle"), a defect type ("" for normal images) and an optional mask path. Like every
Datum it never touches the disk; the mask is read with the image.

Images and masks go through one :class:`AnomalyTransform`, so they stay aligned: the image is
resized straight to ``INPUT.SIZE`` with ``INPUT.INTERPOLATION`` (as AF-CLIP/AnomalyCLIP do; no
crop), the mask with ``INPUT.MASK_INTERPOLATION``: ``nearest``, or ``bilinear``/``bicubic``
(torch, no antialiasing) on the 0/1 mask followed by ``>= 0.5``, or ``pil_bicubic``: PIL
bicubic on the 0/255 mask, then ``ToTensor``, kept as a float mask in [0, 1] (AF-CLIP's
reference code does exactly this; its training grid and its evaluation threshold at 0.5 start
from the float mask). ``random_flip`` flips both; ``normalize`` applies to the image only.

A loader item is ``{"img" [3, H, W], "mask" [1, H, W] float (0/1; in [0, 1] with
``pil_bicubic``, anomalous where > 0.5), "label", "category", "defect", "impath", "index"}``.

Mosaic augmentation (APRIL-GAN's ``MVTecDataset.combine_img``; training loaders only, off
unless :meth:`AnomalyDatasetWrapper.enable_mosaic` is called, as :class:`AnomalyTrainer` does
with the rate its method asks for): with probability ``rate`` an item is replaced by a 2x2
mosaic of four records of its category, each drawn by first choosing a defect type uniformly
(normal images count as one type, upstream's ``good`` folder) and then a record of that type
uniformly, with replacement, from the loader's own records (upstream: the category's ``test``
folder, which is its training data). Tiles are pasted at full resolution in reading order
(top-left, top-right, bottom-left, bottom-right) on a canvas twice the first tile's width and
height; masks likewise (a normal tile is empty); then the joint transform resizes both. The
item's label is 1 if any tile is anomalous (upstream keeps the replaced item's label, which its
loss never reads), its defect ``"mosaic"``. Draws come from a generator seeded with the run's
seed, the epoch (:meth:`AnomalyDatasetWrapper.set_epoch`) and the item index, so they do not
depend on loader workers or on any other random state.
"""
from __future__ import annotations

import logging
import operator
import os
import random
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

from ..config import ConfigError
from ..utils.image import load_image
from .data_manager import DatasetWrapper, read_image
from .dataset_base import DatasetBase
from .datum import Datum
from .errors import ImageReadError
from .transforms import INTERPOLATION_MODES, input_size, interpolation_mode

logger = logging.getLogger(__name__)

__all__ = ["ANOMALY_STATES", "AnomalyDatum", "AnomalyDataset", "AnomalyTransform",
           "AnomalyDatasetWrapper", "read_mask", "MASK_MODES", "MASK_VALUES", "mosaic_2x2",
           "draw_mosaic_records"]

ANOMALY_STATES = ("normal", "anomalous")  # class name of label 0 and 1
MASK_MODES = ("nearest", "bilinear", "bicubic", "pil_bicubic")  # INPUT.MASK_INTERPOLATION
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

    # How mask files encode defects: "binary" (0/255, or 0/1) or "ids" (VisA: non-zero = defect)
    mask_values = "binary"
    # False when anomalous images may come without masks (a folder dataset without MASK_DIR):
    # they are evaluated on image metrics only and cannot be trained on
    masks_required = True

    def dataset_wrapper(self, cfg, data_source, transform=None, is_train: bool = False):
        """The loader's dataset (reads images and masks with this dataset's mask convention)."""
        return AnomalyDatasetWrapper(cfg, data_source, transform=transform, is_train=is_train,
                                     mask_values=self.mask_values,
                                     masks_required=self.masks_required)

    @staticmethod
    def build_transform(cfg, is_train: bool = True) -> "AnomalyTransform":
        """The joint image/mask transform of ``cfg``."""
        return AnomalyTransform.from_cfg(cfg, is_train)


MASK_VALUES = ("binary", "ids")  # 0/255 (or 0/1) masks; VisA's defect-id masks (non-zero = defect)
_MASK_MODES_1CH = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L")
_noticed: set = set()  # the kinds of notice already logged in this process


def _notice_once(kind: str, message: str) -> None:
    if kind not in _noticed:
        _noticed.add(kind)
        logger.warning("%s (further masks like it are not reported)", message)


def _mask_array(img: Image.Image, path: str, of: str) -> np.ndarray:
    """The single channel of the mask ``img`` (an RGB mask whose channels are equal is read as
    grey with a notice; one whose channels differ is an error)."""
    if img.mode in _MASK_MODES_1CH:
        return np.asarray(img)
    if img.mode in ("RGB", "RGBA", "LA"):
        arr = np.asarray(img)
        colour = arr[..., :3] if img.mode != "LA" else arr[..., :1]
        if colour.shape[-1] == 3 and not ((colour[..., 0] == colour[..., 1]).all()
                                          and (colour[..., 1] == colour[..., 2]).all()):
            raise ImageReadError(
                f"Mask {path}{of} is a colour ({img.mode}) image whose channels differ: expected "
                f"a single-channel mask, 0 = normal and 255 (or 1) = defect", path)
        _notice_once(f"mode {img.mode}", f"Mask {path}{of} is an {img.mode} image with equal "
                     f"channels: read its first channel as the mask"
                     + (", alpha ignored" if "A" in img.mode else ""))
        return colour[..., 0]
    raise ImageReadError(f"Mask {path}{of} has image mode {img.mode!r}: expected a single-channel "
                         f"mask (mode L, 1, P or I), 0 = normal and 255 (or 1) = defect", path)


def _check_mask_values(arr: np.ndarray, path: str, of: str, values: str) -> None:
    """``values="binary"``: only 0 and 255, or only 0 and 1 (a notice); ``"ids"``: any
    non-negative integers (VisA). Otherwise an error naming the file and the values found."""
    if arr.dtype == bool:
        return
    if arr.dtype == np.uint8:
        present = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    else:
        present = np.unique(arr)
    if values == "ids":
        if present.size and present[0] < 0:
            negative = present[present < 0][:5].tolist()
            raise ImageReadError(f"Mask {path}{of} holds negative values {negative}: expected "
                                 f"defect ids >= 0 (0 = normal)", path)
        return
    found = set(present.tolist())
    if found <= {0, 255}:
        return
    if found <= {0, 1}:
        _notice_once("0/1", f"Mask {path}{of} holds the values 0 and 1: read 1 as defect")
        return
    shown = ", ".join(map(str, present[:8].tolist())) + (", ..." if present.size > 8 else "")
    raise ImageReadError(
        f"Mask {path}{of} holds the values {{{shown}}} ({present.size} distinct): expected only "
        f"0 (normal) and 255 (defect), or 0 and 1. A mask resized with interpolation or saved "
        f"as JPEG has grey levels; re-save it with nearest-neighbour resizing as PNG", path)


def read_mask(path: str, impath: str = "", values: str = "binary") -> Image.Image:
    """The mask at ``path`` as a binary ``L`` image (255 where the file is non-zero).

    ``values="binary"`` (MVTec, folders): the file holds only 0 and 255, or only 0 and 1 (read
    with a one-time notice); ``"ids"`` (VisA): defect ids, any non-zero value counts as a
    defect. A grey image stored as RGB with equal channels is read with a notice. Anything
    else (grey levels, colour masks, a missing or unreadable file) raises
    :class:`ImageReadError` naming the file and its image.
    """
    if values not in MASK_VALUES:
        raise ValueError(f"mask values must be one of {MASK_VALUES}; got {values!r}")
    of = f" (the mask of image {impath})" if impath else ""
    arr = load_image(path, lambda img: _mask_array(img, path, of), what="mask", of=of)
    _check_mask_values(arr, path, of, values)
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
        """A binary ``L`` mask (0/255) -> [1, H, W] float at ``size``: 0/1, or the float PIL
        bicubic result in [0, 1] for ``pil_bicubic``."""
        if self.mask_interpolation == "pil_bicubic":
            return TF.to_tensor(mask.resize(self.size[::-1], Image.BICUBIC))
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

    Checked per item, at load time: the mask's values (``mask_values``, see :func:`read_mask`),
    that it has its image's size, and that a normal image's mask (if one is given) is empty. An
    anomalous image without a mask path is an error when ``masks_required`` (pixel metrics and
    training need one); otherwise (evaluation only) it gets an empty mask and ``has_mask``
    False. A normal image without a mask gets an all-zero mask.
    """

    def __init__(self, cfg, data_source, transform=None, is_train: bool = False,
                 mask_values: str = "binary", masks_required: bool = True) -> None:
        super().__init__(cfg, data_source, transform=transform, is_train=is_train)
        self.mask_values = mask_values
        self.masks_required = masks_required or is_train

    def _mask(self, item: AnomalyDatum, img: Image.Image) -> Tuple[Image.Image, bool]:
        if not item.mask_path:
            if item.label == 1 and self.masks_required:
                why = "training on anomalous images needs masks" if self.is_train else \
                    "pixel metrics need one"
                raise ImageReadError(f"Anomalous image {item.impath} has no mask path "
                                     f"(category {item.category!r}, defect {item.defect!r}; "
                                     f"{why})", item.impath)
            return Image.new("L", img.size, 0), item.label == 0
        mask = read_mask(item.mask_path, item.impath, self.mask_values)
        if mask.size != img.size:
            raise ImageReadError(
                f"Mask {item.mask_path} is {mask.size[0]}x{mask.size[1]} pixels but its image "
                f"{item.impath} is {img.size[0]}x{img.size[1]} (width x height): a mask must "
                f"have its image's size", item.mask_path)
        if item.label == 0 and mask.getbbox() is not None:
            raise ImageReadError(
                f"Normal image {item.impath} (category {item.category!r}) has a defect mask "
                f"{item.mask_path} with defect pixels: a normal image takes no mask (or an "
                f"empty one); is its label wrong?", item.mask_path)
        return mask, True

    # ------------------------------------------------------------------ mosaic augmentation
    mosaic_rate = 0.0
    mosaic_seed = 0
    epoch = 0

    def enable_mosaic(self, rate: float, seed: int, key: str = "mosaic rate") -> None:
        """Replace a training item by a 2x2 mosaic with probability ``rate`` (module docstring);
        ``seed`` seeds the draws, ``key`` names the setting in errors."""
        if not 0.0 <= float(rate) <= 1.0:
            raise ConfigError(f"{key} must be a probability in [0, 1]; got {rate!r}")
        if rate > 0 and not self.is_train:
            raise ValueError("the mosaic augmentation applies to training loaders only")
        self.mosaic_rate, self.mosaic_seed = float(rate), int(seed)
        groups: Dict[str, Dict[str, List[int]]] = defaultdict(lambda: defaultdict(list))
        for i, item in enumerate(self.data_source):
            groups[item.category][item.defect if item.label else "good"].append(i)
        self._mosaic_groups = {c: [g[d] for d in sorted(g)] for c, g in groups.items()}

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose mosaic draws the items make (set by ``AnomalyTrainer.run_epoch``)."""
        self.epoch = int(epoch)

    def _read(self, item: AnomalyDatum) -> Tuple[Image.Image, Image.Image, bool]:
        img = read_image(item.impath)
        mask, has_mask = self._mask(item, img)
        return img, mask, has_mask

    def _mosaic_rng(self, idx: int) -> Optional[random.Random]:
        """The item's generator when it becomes a mosaic this epoch, else None."""
        if self.mosaic_rate <= 0:
            return None
        rng = random.Random(f"mosaic:{self.mosaic_seed}:{self.epoch}:{idx}")
        return rng if rng.random() < self.mosaic_rate else None

    def __getitem__(self, idx: int) -> Dict:
        item = self.data_source[idx]
        if not isinstance(self.transform, AnomalyTransform):
            raise TypeError(f"anomaly data needs an AnomalyTransform (image and mask together); "
                            f"got {type(self.transform).__name__}")
        rng = self._mosaic_rng(idx)
        if rng is None:
            img, mask, has_mask = self._read(item)
            label, defect = item.label, item.defect
        else:
            tiles = [self.data_source[i] for i in
                     draw_mosaic_records(self._mosaic_groups[item.category], rng)]
            read = [self._read(t) for t in tiles]
            img, mask = mosaic_2x2([r[0] for r in read], [r[1] for r in read])
            has_mask, label, defect = True, max(t.label for t in tiles), "mosaic"
        image, mask_t = self.transform(img, mask)
        return {"img": image, "mask": mask_t, "label": label, "category": item.category,
                "defect": defect, "impath": item.impath, "index": idx,
                "has_mask": has_mask}


def draw_mosaic_records(groups: Sequence[Sequence[int]], rng: random.Random) -> List[int]:
    """Four record indices: each a uniform choice of a group (a defect type, in a fixed order)
    and then a uniform choice within it (``random.choice`` twice, as ``combine_img``)."""
    return [rng.choice(rng.choice(groups)) for _ in range(4)]


def mosaic_2x2(images: Sequence[Image.Image], masks: Sequence[Image.Image]
               ) -> Tuple[Image.Image, Image.Image]:
    """Paste four images (RGB) and their ``L`` masks in reading order on a canvas of twice the
    first image's width and height, as APRIL-GAN's ``combine_img`` (tile i at column ``i % 2``,
    row ``i // 2``, offsets from the first image's size)."""
    if len(images) != 4 or len(masks) != 4:
        raise ValueError(f"a 2x2 mosaic takes 4 images and 4 masks; got {len(images)} and "
                         f"{len(masks)}")
    w, h = images[0].size
    image, mask = Image.new("RGB", (2 * w, 2 * h)), Image.new("L", (2 * w, 2 * h))
    for i, (img, m) in enumerate(zip(images, masks)):
        image.paste(img, ((i % 2) * w, (i // 2) * h))
        mask.paste(m, ((i % 2) * w, (i // 2) * h))
    return image, mask
