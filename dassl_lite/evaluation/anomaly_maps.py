"""Heatmaps people can look at: an image with its anomaly map overlaid and the ground-truth
contour, and a grid of such overlays per category, each tile labelled (image, score, ground
truth) beside a colour bar of the map values (PIL + numpy only)."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..utils.image import read_image
from ..utils.io import atomic_write

__all__ = ["colorize", "overlay", "save_category_maps", "make_grid", "tile_caption", "save_png",
           "map_file_name"]

# A jet-like colour map: (position, RGB) stops, interpolated linearly.
_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_COLOURS = np.array([[0, 0, 143], [0, 128, 255], [64, 255, 160], [255, 200, 0], [200, 0, 0]],
                    dtype=np.float64)
CONTOUR_RGB = (255, 255, 255)
GRID_MAX_IMAGES = 36
GRID_TILE = 128
GRID_PAD = 4  # pixels between tiles
FONT_SIZE = 11
LINE_HEIGHT = 13  # pixels per caption line
COLORBAR_WIDTH, COLORBAR_BAR = 64, 14  # space for the colour bar and its labels; bar width


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


def make_grid(tiles: Sequence[Image.Image], columns: int = 6, tile: int = GRID_TILE,
              captions: Optional[Sequence[Sequence[str]]] = None,
              value_range: Optional[Tuple[float, float]] = None,
              titles: Optional[Sequence[Sequence[str]]] = None) -> Image.Image:
    """Tiles resized to ``tile`` px (longer side) on a white canvas, ``columns`` per row; with
    ``captions`` each tile gets its lines of text below it (image, score, ground truth), with
    ``titles`` each column its lines of text on top, and with ``value_range`` a colour bar on
    the right says which map values the colours stand for."""
    columns = max(1, min(columns, len(tiles)))
    rows = (len(tiles) + columns - 1) // columns
    font = _font()
    n_lines = max((len(c) for c in captions), default=0) if captions else 0
    top = max((len(t) for t in titles), default=0) * LINE_HEIGHT if titles else 0
    cell_w, cell_h = tile + GRID_PAD, tile + GRID_PAD + n_lines * LINE_HEIGHT
    bar_w = COLORBAR_WIDTH if value_range is not None else 0
    canvas = Image.new("RGB", (columns * cell_w + GRID_PAD + bar_w,
                               top + rows * cell_h + GRID_PAD), "white")
    draw = ImageDraw.Draw(canvas)
    for c, lines in enumerate(titles or ()):
        for k, line in enumerate(lines):
            draw.text((GRID_PAD + c * cell_w, GRID_PAD + k * LINE_HEIGHT),
                      _fit(draw, line, font, tile), fill="black", font=font)
    for i, t in enumerate(tiles):
        t = t.copy()
        t.thumbnail((tile, tile))
        x, y = GRID_PAD + (i % columns) * cell_w, top + GRID_PAD + (i // columns) * cell_h
        canvas.paste(t, (x, y))
        for k, line in enumerate(captions[i] if captions else ()):
            draw.text((x, y + tile + 1 + k * LINE_HEIGHT), _fit(draw, line, font, tile),
                      fill="black", font=font)
    if value_range is not None:
        _draw_colorbar(canvas, draw, font, value_range, x=columns * cell_w + GRID_PAD,
                       height=min(canvas.height - 2 * GRID_PAD, 4 * tile))
    return canvas


def _font():
    """PIL's built-in font at a readable size (older Pillow: its fixed bitmap font)."""
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    """``text`` shortened from the left ("...tail") to fit ``width`` px."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("..." + text, font=font) > width:
        text = text[1:]
    return "..." + text


def _draw_colorbar(canvas, draw, font, value_range: Tuple[float, float], x: int,
                   height: int) -> None:
    """A vertical bar of the colour map (high values on top) with the values at its ends."""
    lo, hi = value_range
    top = GRID_PAD + LINE_HEIGHT + 2
    height = max(height - LINE_HEIGHT - 2, 16)
    ramp = np.linspace(1.0, 0.0, height)[:, None].repeat(COLORBAR_BAR, axis=1)
    canvas.paste(Image.fromarray(colorize(ramp)), (x + 4, top))
    draw.rectangle((x + 3, top - 1, x + 4 + COLORBAR_BAR, top + height), outline="black")
    draw.text((x + 2, GRID_PAD), "map", fill="black", font=font)
    for value, y in ((hi, top), (lo, top + height - LINE_HEIGHT + 2),
                     ((lo + hi) / 2, top + height // 2 - LINE_HEIGHT // 2)):
        draw.text((x + 7 + COLORBAR_BAR, y), f"{value:.3g}", fill="black", font=font)


def tile_caption(impath: str, score: float, label: Optional[int] = None) -> List[str]:
    """The lines under a grid tile: image (parent folder/file), score, ground truth if
    known."""
    lines = [os.path.join(os.path.basename(os.path.dirname(impath)), os.path.basename(impath)),
             f"score {score:.3f}"]
    if label is not None:
        lines.append("gt: anomalous" if int(label) else "gt: normal")
    return lines


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
    paths, tiles, captions = [], [], []
    order = sorted(range(len(impaths)), key=lambda i: (-int(labels[i]), -float(scores[i])))
    for rank, i in enumerate(order):
        img = overlay(read_image(impaths[i]), maps[i], masks[i], lo, hi)
        path = os.path.join(directory, map_file_name(impaths[i]))
        save_png(img, path)
        paths.append(path)
        if rank < GRID_MAX_IMAGES:
            tiles.append(img)
            captions.append(tile_caption(impaths[i], scores[i], labels[i]))
    grid_path = os.path.join(directory, "grid.png")
    save_png(make_grid(tiles, captions=captions, value_range=(lo, hi)), grid_path)
    return paths + [grid_path]
