"""Image transforms chosen by name (``INPUT.TRANSFORMS``) with Dassl's pipeline semantics.

Every choice is a :class:`TransformStep` in ``TRANSFORM_REGISTRY``: a builder from cfg plus its
position in the pipeline. The train pipeline is Dassl's: resize to ``INPUT.SIZE`` unless a
random crop is chosen, the PIL steps in a fixed order, ``ToTensor``, then the tensor steps. The
test pipeline is ``Resize(max(SIZE))``, ``CenterCrop(SIZE)`` (or ``Resize(SIZE)`` with
``INPUT.TEST_RESIZE squash``), ``ToTensor`` and the chosen steps marked ``in_test`` (normalize,
instance_norm). Random choices draw from the torch RNG.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from torchvision.transforms import InterpolationMode

from ..registry import TRANSFORM_REGISTRY

logger = logging.getLogger(__name__)

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}
TENSOR_ORDER = 100  # steps with order >= this run after ToTensor
RANDOM_CROPS = ("random_crop", "random_resized_crop")


@dataclass(frozen=True)
class TransformStep:
    """A named choice of ``INPUT.TRANSFORMS``."""

    build: Callable[..., Callable]  # build(cfg) -> transform
    order: int  # position in the train pipeline; >= TENSOR_ORDER works on tensors
    in_test: bool = False  # also part of the test pipeline


def register_transform(name: str, order: int, in_test: bool = False, force: bool = False):
    """Decorator registering ``build(cfg)`` as the transform choice ``name``."""

    def deco(build: Callable) -> Callable:
        TRANSFORM_REGISTRY.register(TransformStep(build, order, in_test), name=name, force=force)
        return build

    return deco


def interpolation_mode(cfg) -> InterpolationMode:
    """``INPUT.INTERPOLATION`` as a torchvision mode; anything else is a ValueError."""
    name = cfg.INPUT.INTERPOLATION
    if name not in INTERPOLATION_MODES:
        raise ValueError(
            f"INPUT.INTERPOLATION must be one of {', '.join(INTERPOLATION_MODES)}; got {name!r}"
        )
    return INTERPOLATION_MODES[name]


TEST_RESIZES = ("crop", "squash")


def eval_resize(cfg) -> str:
    """``INPUT.TEST_RESIZE`` (a config without the key: Dassl's "crop"); anything else is a
    ValueError naming the key and the choices."""
    name = cfg.INPUT.get("TEST_RESIZE", "crop")
    if name not in TEST_RESIZES:
        raise ValueError(f"INPUT.TEST_RESIZE must be one of {', '.join(TEST_RESIZES)}; got {name!r}")
    return name


def input_size(cfg) -> Tuple[int, int]:
    """``INPUT.SIZE`` as (height, width); anything else is a ValueError."""
    size = tuple(cfg.INPUT.SIZE)
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ValueError(f"INPUT.SIZE must be (height, width) of positive ints; got {cfg.INPUT.SIZE!r}")
    return size


# ------------------------------------------------------------------ custom transforms
class Random2DTranslation:
    """With probability ``p``, enlarge by 1/8 and crop (height, width) at a random place;
    otherwise resize to (height, width)."""

    def __init__(self, height: int, width: int, p: float = 0.5,
                 interpolation: InterpolationMode = InterpolationMode.BILINEAR) -> None:
        self.height, self.width, self.p, self.interpolation = height, width, p, interpolation

    def __call__(self, img):
        if torch.rand(()).item() > self.p:
            return F.resize(img, [self.height, self.width], interpolation=self.interpolation)
        new_h, new_w = int(round(self.height * 1.125)), int(round(self.width * 1.125))
        img = F.resize(img, [new_h, new_w], interpolation=self.interpolation)
        top = int(round(torch.rand(()).item() * (new_h - self.height)))
        left = int(round(torch.rand(()).item() * (new_w - self.width)))
        return F.crop(img, top, left, self.height, self.width)

    def __repr__(self) -> str:
        return f"Random2DTranslation(size=({self.height}, {self.width}), p={self.p})"


class Cutout:
    """Zero ``n_holes`` squares of side ``length`` (clipped at the border) in a CHW tensor."""

    def __init__(self, n_holes: int = 1, length: int = 16) -> None:
        self.n_holes, self.length = n_holes, length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        mask = torch.ones(h, w, dtype=img.dtype)
        for _ in range(self.n_holes):
            y, x = torch.randint(h, ()).item(), torch.randint(w, ()).item()
            half = self.length // 2
            mask[max(y - half, 0):y + half, max(x - half, 0):x + half] = 0
        return img * mask

    def __repr__(self) -> str:
        return f"Cutout(n_holes={self.n_holes}, length={self.length})"


class GaussianNoise:
    """With probability ``p``, add N(mean, std) noise to a tensor."""

    def __init__(self, mean: float = 0.0, std: float = 0.15, p: float = 0.5) -> None:
        self.mean, self.std, self.p = mean, std, p

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if torch.rand(()).item() > self.p:
            return img
        return img + torch.randn(img.shape) * self.std + self.mean

    def __repr__(self) -> str:
        return f"GaussianNoise(mean={self.mean}, std={self.std}, p={self.p})"


class InstanceNormalization:
    """Normalize each channel of a CHW tensor by its own mean and std."""

    def __init__(self, eps: float = 1e-8) -> None:
        self.eps = eps

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        flat = img.reshape(img.shape[0], -1)
        mean, std = flat.mean(1).view(-1, 1, 1), flat.std(1).view(-1, 1, 1)
        return (img - mean) / (std + self.eps)

    def __repr__(self) -> str:
        return f"InstanceNormalization(eps={self.eps})"


# ------------------------------------------------------------------ registered choices
@register_transform("random_translation", order=10)
def _random_translation(cfg):
    return Random2DTranslation(*input_size(cfg))


@register_transform("random_crop", order=20)
def _random_crop(cfg):
    return T.RandomCrop(input_size(cfg), padding=cfg.INPUT.CROP_PADDING)


@register_transform("random_resized_crop", order=30)
def _random_resized_crop(cfg):
    return T.RandomResizedCrop(
        input_size(cfg), scale=tuple(cfg.INPUT.RRCROP_SCALE), interpolation=interpolation_mode(cfg)
    )


@register_transform("random_flip", order=40)
def _random_flip(cfg):
    return T.RandomHorizontalFlip()


@register_transform("center_crop", order=45)
def _center_crop(cfg):
    # Dassl accepts this choice for training but adds nothing: the image already has SIZE there.
    return T.CenterCrop(input_size(cfg))


@register_transform("colorjitter", order=60)
def _colorjitter(cfg):
    i = cfg.INPUT
    return T.ColorJitter(brightness=i.COLORJITTER_B, contrast=i.COLORJITTER_C,
                         saturation=i.COLORJITTER_S, hue=i.COLORJITTER_H)


@register_transform("randomgrayscale", order=70)
def _randomgrayscale(cfg):
    return T.RandomGrayscale(p=cfg.INPUT.RGS_P)


@register_transform("gaussian_blur", order=80)
def _gaussian_blur(cfg):
    return T.RandomApply([T.GaussianBlur(cfg.INPUT.GB_K)], p=cfg.INPUT.GB_P)


@register_transform("cutout", order=110)
def _cutout(cfg):
    return Cutout(cfg.INPUT.CUTOUT_N, cfg.INPUT.CUTOUT_LEN)


@register_transform("normalize", order=120, in_test=True)
def _normalize(cfg):
    return T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)


@register_transform("gaussian_noise", order=130)
def _gaussian_noise(cfg):
    return GaussianNoise(cfg.INPUT.GN_MEAN, cfg.INPUT.GN_STD)


@register_transform("instance_norm", order=140, in_test=True)
def _instance_norm(cfg):
    return InstanceNormalization()


# ------------------------------------------------------------------ pipelines
def build_transform(
    cfg, is_train: bool = True, choices: Optional[Sequence[str]] = None
) -> Optional[T.Compose]:
    """The train or test pipeline for ``choices`` (default ``INPUT.TRANSFORMS``).

    Returns None when ``INPUT.NO_TRANSFORM``. Unknown names raise the registry's KeyError.
    """
    if cfg.INPUT.NO_TRANSFORM:
        logger.info("INPUT.NO_TRANSFORM: no transform is applied")
        return None
    choices = list(cfg.INPUT.TRANSFORMS if choices is None else choices)
    steps = {name: TRANSFORM_REGISTRY.get(name) for name in choices}
    interp = interpolation_mode(cfg)
    size = input_size(cfg)
    if is_train:
        head = [] if any(c in RANDOM_CROPS for c in choices) else [T.Resize(size, interpolation=interp)]
    elif eval_resize(cfg) == "squash":
        head = [T.Resize(size, interpolation=interp)]
    else:
        head = [T.Resize(max(size), interpolation=interp), T.CenterCrop(size)]
        steps = {n: s for n, s in steps.items() if s.in_test}
    ordered = sorted(steps.items(), key=lambda kv: (kv[1].order, kv[0]))
    pil = [s.build(cfg) for _, s in ordered if s.order < TENSOR_ORDER]
    tensor = [s.build(cfg) for _, s in ordered if s.order >= TENSOR_ORDER]
    tfms: List[Callable] = head + pil + [T.ToTensor()] + tensor
    logger.info("Transform (%s):\n%s", "train" if is_train else "test",
                "\n".join(f"  + {t!r}" for t in tfms))
    return T.Compose(tfms)
