"""Heatmaps people can look at: an image with its anomaly map overlaid and the ground-truth
contour, and a grid of such overlays per category (PIL + numpy only)."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image

from ..utils.image import read_image
from ..utils.io import atomic_write

__all__ = ["colorize", "overlay", "save_category_maps", "make_grid", "save_png", "map_file_name"]

# A jet-like colour map: (position, RGB) stops, interpolated linearly.
_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_COLOURS = np.array([[0, 0, 143], [0, 128, 255], [64, 255, 160], [255, 200, 0], [200, 0, 0]],
                    dtype=np.float64)
CONTOUR_RGB = (255, 255, 255)
GRID_MAX_IMAGES = 36
GRID_TILE = 128


def colorize(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] ([H, W]) -> uint8 RGB [H, W, 3] through the jet-like colour map."""
    v = np.clip(values, 0.0, 1.0)
    rgb = np.stack([np.interp(v, _STOPS, _COLOURS[:, c]) for c in range(3)], axis=-1)
    return rgb.round().astype(np.uint8)


def _contour(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (the region's inner border)."""
    m = np.pad(mask.astype(bool), 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask.astype(bool) & ~inner


def overlay(image: Image.Image, amap: np.ndarray, mask: Optional[np.ndarray] = None,
            vmin: Optional[float] = None, vmax: Optional[float] = None,
            alpha: float = 0.5) -> Image.Image:
    """``image`` (resized to the map) blended with the coloured map, normalised to
    [vmin, vmax] (default: the map's own range), with the mask's contour drawn on top."""
    h, w = amap.shape
    base = np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float64)
    lo = float(amap.min()) if vmin is None else vmin
    hi = float(amap.max()) if vmax is None else vmax
    norm = (amap - lo) / (hi - lo) if hi > lo else np.zeros_like(amap)
    out = (1 - alpha) * base + alpha * colorize(norm)
    out = out.round().astype(np.uint8)
    if mask is not None and mask.any():
        out[_contour(mask)] = CONTOUR_RGB
    return Image.fromarray(out)


def make_grid(tiles: Sequence[Image.Image], columns: int = 6,
              tile: int = GRID_TILE) -> Image.Image:
    """Tiles resized to ``tile`` px (longer side) on a black canvas, ``columns`` per row."""
    rows = (len(tiles) + columns - 1) // columns
    canvas = Image.new("RGB", (columns * tile, rows * tile))
    for i, t in enumerate(tiles):
        t = t.copy()
        t.thumbnail((tile, tile))
        canvas.paste(t, ((i % columns) * tile, (i // columns) * tile))
    return canvas


def save_png(img: Image.Image, path: str) -> None:
    """Write ``img`` as PNG atomically."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, lambda f: img.save(f, format="PNG"))


def map_file_name(impath: str) -> str:
    """``<parent folder>_<stem>.png`` (MVTec/VisA stems repeat across defect folders)."""
    parent = os.path.basename(os.path.dirname(impath))
    stem = os.path.splitext(os.path.basename(impath))[0]
    return f"{parent}_{stem}.png" if parent else f"{stem}.png"


def save_category_maps(directory: str, impaths: Sequence[str], maps: np.ndarray,
                       masks: np.ndarray, scores: Sequence[float],
                       labels: Sequence[int]) -> List[str]:
    """One overlay per image (maps normalised by the category's range) and ``grid.png`` of up
    to ``GRID_MAX_IMAGES`` (anomalous first); returns the written paths."""
    lo, hi = float(maps.min()), float(maps.max())
    paths, tiles = [], []
    order = sorted(range(len(impaths)), key=lambda i: (-int(labels[i]), -float(scores[i])))
    for rank, i in enumerate(order):
        img = overlay(read_image(impaths[i]), maps[i], masks[i], lo, hi)
        path = os.path.join(directory, map_file_name(impaths[i]))
        save_png(img, path)
        paths.append(path)
        if rank < GRID_MAX_IMAGES:
            tiles.append(img)
    grid_path = os.path.join(directory, "grid.png")
    save_png(make_grid(tiles), grid_path)
    return paths + [grid_path]
