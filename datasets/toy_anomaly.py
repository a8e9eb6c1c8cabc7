"""The toy anomaly world: normal objects and textures, and defects drawn with exact masks.

Two toy datasets with disjoint categories and partly disjoint defect types, so that
cross-dataset zero-shot (train on one, test on the other) means something:

- ``ToyMVTec``: objects red_circle, blue_square, green_triangle and textures stripes, checks,
  dots; defects hole, scratch, stain.
- ``ToyVisA``: objects yellow_star, purple_cross, orange_heart, pink_moon and the texture mesh;
  defects crack, missing, spot and stain (the one type both share).

Normal images are aligned per category, as MVTec AD's and VisA's are (one product, one pose,
one background): a category's look (background colours and gradient, object colour, size,
rotation and position, or a texture's colours, angle, period and phase) is drawn once per
(seed, dataset, category), and each image jitters it a little (``NORMAL_JITTER``: up to 2 px
shift, 2 degrees, 2 % scale, 0.02 per colour channel, plus pixel noise). So a few-shot memory
bank of one normal image matches the normal patches of the others; defects stay random.

Defects (sizes at 128 px, where a 16 px ViT patch is one grid cell; all from about one patch up):
hole (a dark ellipse, 16-34 px), scratch (a light or dark polyline, 4-6 px wide, 32-64 px
long), stain (a translucent blob of a saturated colour, 2-3 overlapping ellipses of 16-28 px),
crack (a dark zig-zag, 3-5 px wide, 35-85 px long), missing (a piece of the object, up to 44 px
across, replaced by what lies behind it; on textures the pattern is gone) and spot (1-3 round
spots, 14-22 px). Objects'
defects sit on the object. About one defective image in five has two defects.

Masks are exact: a pixel is in the mask when the defect was drawn on it and the drawing changed
its 8-bit value. Determinism: one sample is a pure function of (seed, dataset, category, index,
defects, size) through SHA-256-seeded numpy Generators (the category's look, the image's jitter,
each defect), as in ``datasets.toy_generator``. Version 3 (aligned normals) replaced version 2,
where every normal image drew its own background, placement and colours.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .toy_generator import _OUTLINES, COLOURS, _composite, _jitter_colour, _mask, _muted_colour

__all__ = ["ToyCategory", "TOY_ANOMALY_DATASETS", "DEFECTS", "ANOMALY_GENERATOR_VERSION",
           "ToySample", "render_sample", "anomaly_rng"]

ANOMALY_GENERATOR_VERSION = 3
# How much one normal image differs from its category's look: object/pattern shift (px),
# rotation (degrees), object scale (fraction), colour offset per channel (of 1).
NORMAL_JITTER = {"shift": 2.0, "angle": 2.0, "scale": 0.02, "colour": 0.02}


@dataclass(frozen=True)
class ToyCategory:
    """A category: an object (colour + shape) or a texture (pattern kind)."""

    name: str
    kind: str  # "object" or "texture"
    colour: str = ""  # object colour (a toy_generator colour name)
    shape: str = ""  # object shape (a toy_generator shape) or texture pattern


TOY_ANOMALY_DATASETS: Dict[str, Dict[str, object]] = {
    "ToyMVTec": {
        "categories": (ToyCategory("red_circle", "object", "red", "circle"),
                       ToyCategory("blue_square", "object", "blue", "square"),
                       ToyCategory("green_triangle", "object", "green", "triangle"),
                       ToyCategory("stripes", "texture", shape="stripes"),
                       ToyCategory("checks", "texture", shape="checks"),
                       ToyCategory("dots", "texture", shape="dots")),
        "defects": ("hole", "scratch", "stain"),
    },
    "ToyVisA": {
        "categories": (ToyCategory("yellow_star", "object", "yellow", "star"),
                       ToyCategory("purple_cross", "object", "purple", "cross"),
                       ToyCategory("orange_heart", "object", "orange", "heart"),
                       ToyCategory("pink_moon", "object", "pink", "moon"),
                       ToyCategory("mesh", "texture", shape="mesh")),
        "defects": ("crack", "missing", "spot", "stain"),
    },
}
DEFECTS = ("hole", "scratch", "stain", "crack", "missing", "spot")


@dataclass
class ToySample:
    """One rendered sample: the image, its defect-free twin and the mask of defect ids
    (0 normal; k where ``defects[k - 1]`` was drawn, later defects on top)."""

    image: Image.Image
    normal: Image.Image
    mask: np.ndarray  # uint8 [H, W]
    defects: Tuple[str, ...]


def anomaly_rng(seed: int, dataset: str, category: str, index: int, size: int,
                part: str = "") -> np.random.Generator:
    """The random stream of one sample (``part`` separates the normal image from defects)."""
    key = (f"dassl_lite.toy_anomaly/v{ANOMALY_GENERATOR_VERSION}/{seed}/{dataset}/{category}/"
           f"{index}/{size}/{part}")
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


# ---------------------------------------------------------------- normal images
def _texture_pattern(kind: str, size: int, angle: float, period: float,
                     phase: Tuple[float, float]) -> np.ndarray:
    """A {0, 1} pattern of ``kind`` at ``angle`` (radians), ``period`` and ``phase`` (px)."""
    ax = np.arange(size, dtype=np.float32) + 0.5
    xx, yy = np.meshgrid(ax, ax)
    a = angle + (np.pi / 4 if kind == "mesh" else 0.0)
    u = xx * np.cos(a) + yy * np.sin(a) + phase[0]
    v = -xx * np.sin(a) + yy * np.cos(a) + phase[1]
    if kind == "stripes":
        return (np.floor(u / period) % 2).astype(np.float32)
    if kind == "checks":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == "dots":
        du, dv = (u / period) % 2 - 1, (v / period) % 2 - 1
        return (du * du + dv * dv < 0.35).astype(np.float32)
    if kind == "mesh":  # thin lines of a diagonal grid
        return (((u % period) < 2.5) | ((v % period) < 2.5)).astype(np.float32)
    raise ValueError(f"unknown texture {kind!r}")


def _outline(shape: str, size: int, radius: float, angle: float, aspect: float,
             centre: np.ndarray) -> np.ndarray:
    """The shape's vertices in pixels: ``radius`` (fraction of ``size``), ``angle`` (degrees),
    ``aspect`` and ``centre`` (px)."""
    pts = _OUTLINES[shape] * np.array([aspect, 1 / aspect])
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    pts = np.stack([c * pts[:, 0] - s * pts[:, 1], -(s * pts[:, 0] + c * pts[:, 1])], axis=1)
    return pts * radius * size + centre  # the minus above: y points down in images


def _linear_gradient(c0: np.ndarray, c1: np.ndarray, angle: float, size: int) -> np.ndarray:
    ax = np.arange(size, dtype=np.float32) + 0.5
    xx, yy = np.meshgrid(ax, ax)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = ((t - t.min()) / max(float(np.ptp(t)), 1e-6))[..., None]
    return c0 * (1 - t) + c1 * t


def _category_look(cat: ToyCategory, rng: np.random.Generator) -> Dict[str, object]:
    """What every normal image of a category shares (as a real product line: one object, one
    pose, one background, or one fabric): colours, gradient, placement or pattern geometry."""
    if cat.kind == "texture":
        c0 = _muted_colour(rng, 0.35)
        c1 = np.clip(c0 + np.sign(0.5 - c0.mean()) * rng.uniform(0.3, 0.45), 0, 1)
        return {"c0": c0, "c1": c1, "angle": rng.uniform(-0.3, 0.3),
                "period": rng.uniform(9.0, 13.0), "phase": rng.uniform(0, 64, 2)}
    return {"bg0": _muted_colour(rng), "bg1": _muted_colour(rng),
            "gradient": rng.uniform(0, 2 * np.pi), "fg": _jitter_colour(COLOURS[cat.colour], rng),
            "radius": rng.uniform(0.27, 0.33), "angle": rng.uniform(-20, 20),
            "aspect": rng.uniform(0.92, 1.08), "centre": rng.uniform(-4, 4, 2)}


def _render_normal(cat: ToyCategory, look: Dict[str, object], rng: np.random.Generator,
                   size: int):
    """(image [H, W, 3] float, what lies behind the object, object coverage [H, W]): the
    category's look with a little per-image jitter (NORMAL_JITTER)."""
    j = NORMAL_JITTER
    tint = lambda: rng.uniform(-j["colour"], j["colour"], 3)  # noqa: E731
    if cat.kind == "texture":
        c0, c1 = np.clip(look["c0"] + tint(), 0, 1), np.clip(look["c1"] + tint(), 0, 1)
        pattern = _texture_pattern(cat.shape, size, look["angle"] + rng.uniform(-j["angle"],
                                   j["angle"]) * np.pi / 180, look["period"],
                                   look["phase"] + rng.uniform(-j["shift"], j["shift"], 2))
        img = _composite(np.broadcast_to(c0, (size, size, 3)), c1, pattern)
        background = np.broadcast_to((c0 + c1) / 2, (size, size, 3)).copy()
        coverage = np.ones((size, size), np.float32)
    else:
        background = _linear_gradient(np.clip(look["bg0"] + tint(), 0, 1),
                                      np.clip(look["bg1"] + tint(), 0, 1), look["gradient"], size)
        fg = np.clip(look["fg"] + tint(), 0, 1)
        centre = size / 2 + look["centre"] + rng.uniform(-j["shift"], j["shift"], 2)
        pts = _outline(cat.shape, size, look["radius"] * (1 + rng.uniform(-j["scale"], j["scale"])),
                       look["angle"] + rng.uniform(-j["angle"], j["angle"]), look["aspect"], centre)
        coverage = _mask(pts, size)
        img = _composite(background, fg, coverage)
    noise = rng.normal(0, rng.uniform(0.005, 0.015), (size, size, 1))
    return img + noise, background + noise, coverage


# ---------------------------------------------------------------- defects
def _anchor(coverage: np.ndarray, rng: np.random.Generator, margin: int) -> np.ndarray:
    """A random point (x, y) on the object (coverage > 0.9), ``margin`` px from the border."""
    size = coverage.shape[0]
    ys, xs = np.nonzero(coverage[margin:size - margin, margin:size - margin] > 0.9)
    if ys.size == 0:
        return rng.uniform(margin, size - margin, size=2)
    k = rng.integers(ys.size)
    return np.array([xs[k] + margin, ys[k] + margin], dtype=float)


def _region(size: int, draw_fn: Callable[[ImageDraw.ImageDraw], None]) -> np.ndarray:
    """The pixels a PIL drawing covers (no anti-aliasing: exact)."""
    layer = Image.new("L", (size, size), 0)
    draw_fn(ImageDraw.Draw(layer))
    return np.asarray(layer) > 0


def _ellipse(c, rx, ry):
    return [c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry]


def _polyline(start: np.ndarray, rng, n: int, step: Tuple[float, float], turn: float):
    pts, angle = [start], rng.uniform(0, 2 * np.pi)
    for _ in range(n):
        angle += rng.uniform(-turn, turn)
        pts.append(pts[-1] + rng.uniform(*step) * np.array([np.cos(angle), np.sin(angle)]))
    return [tuple(p) for p in pts]


def _contrast(img: np.ndarray, region: np.ndarray, rng) -> np.ndarray:
    """Near-white or near-black, whichever differs more from the region's mean."""
    mean = float(img[region].mean()) if region.any() else 0.5
    return np.full(3, rng.uniform(0.9, 1.0) if mean < 0.5 else rng.uniform(0.0, 0.1))


def _hole(img, behind, coverage, rng):
    size = img.shape[0]
    c, r = _anchor(coverage, rng, 12), rng.uniform(8, 17)
    region = _region(size, lambda d: d.ellipse(_ellipse(c, r, r * rng.uniform(0.6, 1.0)),
                                               fill=255))
    dark = np.array([0.08, 0.06, 0.05]) + rng.uniform(0, 0.06)
    return dark, region


def _scratch(img, behind, coverage, rng):
    size = img.shape[0]
    pts = _polyline(_anchor(coverage, rng, 14), rng, 2, (16, 32), 0.6)
    region = _region(size, lambda d: d.line(pts, fill=255, width=int(rng.integers(4, 7))))
    return _contrast(img, region, rng), region


def _stain(img, behind, coverage, rng):
    size = img.shape[0]
    c = _anchor(coverage, rng, 14)
    blobs = [(c + rng.uniform(-7, 7, 2), rng.uniform(8, 14), rng.uniform(6, 12))
             for _ in range(rng.integers(2, 4))]
    region = _region(size, lambda d: [d.ellipse(_ellipse(p, rx, ry), fill=255)
                                      for p, rx, ry in blobs])
    mean = img[region].mean(axis=0) if region.any() else np.full(3, 0.5)
    options = [np.array(COLOURS[name]) for name in rng.choice(list(COLOURS), 3, replace=False)]
    hue = max(options, key=lambda rgb: float(np.abs(rgb - mean).sum()))  # the most visible
    alpha = rng.uniform(0.6, 0.8)
    return alpha * hue + (1 - alpha) * img, region


def _crack(img, behind, coverage, rng):
    size = img.shape[0]
    pts = _polyline(_anchor(coverage, rng, 16), rng, int(rng.integers(5, 8)), (7, 12), 1.4)
    region = _region(size, lambda d: d.line(pts, fill=255, width=int(rng.integers(3, 6))))
    return np.full(3, rng.uniform(0.02, 0.12)), region


def _missing(img, behind, coverage, rng):
    size = img.shape[0]
    c = _anchor(coverage, rng, 10)
    r = rng.uniform(12, 22)
    angle = rng.uniform(0, 2 * np.pi)
    corners = [tuple(c + r * np.array([np.cos(angle + t), np.sin(angle + t)]))
               for t in np.linspace(0, 2 * np.pi, int(rng.integers(4, 7)), endpoint=False)]
    region = _region(size, lambda d: d.polygon(corners, fill=255)) & (coverage > 0.5)
    return behind, region


def _spot(img, behind, coverage, rng):
    size = img.shape[0]
    spots = [(_anchor(coverage, rng, 10), rng.uniform(7, 11)) for _ in range(rng.integers(1, 4))]
    region = _region(size, lambda d: [d.ellipse(_ellipse(p, r, r), fill=255) for p, r in spots])
    return _contrast(img, region, rng) * 0.6 + 0.4 * np.array([0.9, 0.1, 0.6]), region


_DEFECT_FNS = {"hole": _hole, "scratch": _scratch, "stain": _stain, "crack": _crack,
               "missing": _missing, "spot": _spot}
assert set(_DEFECT_FNS) == set(DEFECTS), "every defect needs a renderer"


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(arr * 255), 0, 255).astype(np.uint8)


def render_sample(dataset: str, category: str, index: int, defects: Sequence[str] = (),
                  seed: int = 0, size: int = 128) -> ToySample:
    """Sample ``index`` of ``category`` in toy dataset ``dataset`` with ``defects`` drawn on it
    (none: a normal image). A pure function of its arguments."""
    cats = {c.name: c for c in TOY_ANOMALY_DATASETS[dataset]["categories"]}
    if category not in cats:
        raise ValueError(f"{dataset} categories are {sorted(cats)}; got {category!r}")
    unknown = [d for d in defects if d not in DEFECTS]
    if unknown or size < 64:
        raise ValueError(f"defects must be among {DEFECTS} and size >= 64; got {list(defects)}, "
                         f"{size}")
    look = _category_look(cats[category], anomaly_rng(seed, dataset, category, 0, size, "look"))
    img, behind, coverage = _render_normal(cats[category], look, anomaly_rng(
        seed, dataset, category, index, size, "normal"), size)
    normal = _to_uint8(img)
    out, ids = img.copy(), np.zeros((size, size), np.uint8)
    for k, name in enumerate(defects, start=1):
        rng = anomaly_rng(seed, dataset, category, index, size, f"defect{k}/{name}")
        colour, region = _DEFECT_FNS[name](out, behind, coverage, rng)
        colour = np.broadcast_to(colour, out.shape)
        noise = rng.normal(0, 0.015, (size, size, 1))
        out = np.where(region[..., None], colour + noise, out)
        ids[region] = k
    final = _to_uint8(out)
    ids[(final == normal).all(axis=-1)] = 0  # a pixel the defect did not change is not in it
    return ToySample(Image.fromarray(final), Image.fromarray(normal), ids, tuple(defects))


def defect_plan(dataset: str, index: int, seed: int = 0, category: str = "") -> List[str]:
    """The defects of defective test image ``index``: its type cycles through the dataset's
    defect types; one image in five gets a second, random defect."""
    types = TOY_ANOMALY_DATASETS[dataset]["defects"]
    first = types[index % len(types)]
    rng = anomaly_rng(seed, dataset, category, index, 0, "plan")
    if rng.uniform() < 0.2:
        return [first, types[int(rng.integers(len(types)))]]
    return [first]
