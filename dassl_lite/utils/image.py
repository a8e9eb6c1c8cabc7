"""Reading images as the models see them: 8-bit RGB, with errors that name the file.

Data loading, anomaly-map figures and the tools all read images through :func:`read_image`.
"""
from __future__ import annotations

from typing import Callable, TypeVar

import numpy as np
from PIL import Image

from ..errors import DasslLiteError

T = TypeVar("T")


class ImageReadError(DasslLiteError, OSError):
    """An image that cannot be opened or decoded; ``filename`` is its path.

    Built from one message so that a DataLoader worker can re-raise it in the main process.
    """

    def __init__(self, message: str, filename: str = "") -> None:
        super().__init__(message)
        self.filename = filename

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):
        return type(self), (str(self), self.filename)


def to_rgb8(img: Image.Image, path: str = "") -> Image.Image:
    """``img`` as 8-bit RGB, with high bit depths scaled instead of clipped.

    16-bit modes (``I;16*``, and ``I`` holding values in 0..65535, as 16-bit PNG/TIFF decode)
    keep their top 8 bits (``v >> 8``, as torchvision's uint16 -> uint8 conversion); float
    images (``F``) must lie in [0, 1] and are scaled by 255. Other values are refused by name.
    Palette, grey, RGBA, CMYK, ... convert as Pillow does.
    """
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img)
        if img.mode == "F":
            lo, hi = float(arr.min()), float(arr.max())
            if not (np.isfinite(arr).all() and lo >= 0.0 and hi <= 1.0):
                raise ImageReadError(
                    f"Cannot read image {path}: a float image must hold values in [0, 1]; its "
                    f"values are in [{lo:g}, {hi:g}]. Convert it to 8- or 16-bit first", path)
            grey = np.round(arr.astype(np.float64) * 255.0).astype(np.uint8)
        else:
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi > 65535:
                raise ImageReadError(
                    f"Cannot read image {path}: mode {img.mode} with values in [{lo}, {hi}]; "
                    f"expected 8- or 16-bit data (0..65535)", path)
            grey = (arr.astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return img.convert("RGB")


def load_image(path: str, convert: Callable[[Image.Image], T], what: str = "image",
               of: str = "") -> T:
    """``convert`` of the decoded image at ``path``; a missing or undecodable file raises
    ImageReadError naming it ("Cannot read <what> <path><of>: ..."), as does ``convert``."""
    try:
        with Image.open(path) as img:
            img.load()
            return convert(img)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"Cannot read {what} {path}{of}: file not found", path) from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"Cannot read {what} {path}{of}: {type(e).__name__}: {e}",
                             path) from e


def read_image(path: str) -> Image.Image:
    """The image at ``path`` as 8-bit RGB (see :func:`to_rgb8`); a missing or undecodable file
    raises ImageReadError."""
    return load_image(path, lambda img: to_rgb8(img, path))
