"""The toy world: a deterministic procedural image generator with compositional class names.

Classes are colour x shape pairs ("red circle", "blue arrow", ...): 8 colours x 8 shapes = 64
classes. Three rendering domains share that class list, so a model trained on one can be tested
on the others (cross-dataset / domain generalization):

- ``ToyShapes``: flat filled shapes on a plain or gradient background of muted colour.
- ``ToyTextures``: shapes filled with stripes, checks or dots of the class colour and a near-black
  or near-white tone, on a busy patterned background of muted colours.
- ``ToySketch``: outline only, a wobbly hand-drawn stroke in the class colour on greyish paper.

Label order (what makes base-to-novel meaningful). The base/new split takes the sorted label ids
and uses the first half as base classes. Colour ``c`` and shape ``s`` form a base class when
``(s - c) mod 8`` is 0, 1, 2 or 3 (a cyclic band over the colour x shape grid); those 32 classes
come first (labels 0-31), the other 32 after (labels 32-63, new). Every colour then appears with
four shapes in the base half and with the four others in the new half, and every shape with four
colours in each half, so each novel class is an unseen COMBINATION of a colour and a shape that
were both seen in base. Unlike a checkerboard (which would cut the base classes into two blocks,
four colours x four shapes each, sharing neither colours nor shapes), the band links all colours
and shapes into one connected design.

Determinism. Image ``i`` of class ``c`` in domain ``d`` is a pure function of
``(seed, d, c, i, size)``: a numpy Generator seeded from a SHA-256 digest of those values (never
Python's salted ``hash()``), and PNG files are written by PIL with fixed parameters, so the same
seed gives the same bytes. Dataset splits use sample indices below ``PRETRAIN_INDEX_START``;
pretraining must draw indices from ``PRETRAIN_INDEX_START`` upwards, so the toy CLIP never sees
an image of any split.
"""
from __future__ import annotations

import colorsys
import hashlib
from typing import Callable, Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLOURS",
    "SHAPES",
    "CLASSNAMES",
    "DOMAINS",
    "TEMPLATES",
    "DOMAIN_TEMPLATES",
    "PRETRAIN_INDEX_START",
    "GENERATOR_VERSION",
    "class_parts",
    "captions",
    "render",
    "render_with_box",
    "sample_rng",
]

GENERATOR_VERSION = 1
PRETRAIN_INDEX_START = 1_000_000
_SUPERSAMPLE = 4  # shapes are drawn at 4x the size and box-filtered down (anti-aliasing)

# name -> RGB in 0..1; hues far enough apart to survive the per-image colour jitter
COLOURS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.10),
    "orange": (0.98, 0.55, 0.05),
    "yellow": (0.96, 0.88, 0.10),
    "green": (0.13, 0.66, 0.22),
    "blue": (0.10, 0.32, 0.88),
    "purple": (0.55, 0.18, 0.72),
    "pink": (0.98, 0.52, 0.76),
    "brown": (0.50, 0.30, 0.13),
}
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart", "moon", "arrow")


def _label_order() -> List[Tuple[int, int]]:
    """(colour index, shape index) per label: the base band first, then the rest (module doc)."""
    n_c, n_s = len(COLOURS), len(SHAPES)
    cells = [(c, s) for c in range(n_c) for s in range(n_s)]
    is_base = [(s - c) % n_s < n_s // 2 for c, s in cells]
    return [cell for base in (True, False) for cell, b in zip(cells, is_base) if b == base]


_LABEL_CELLS = _label_order()
CLASSNAMES: List[str] = [f"{list(COLOURS)[c]} {SHAPES[s]}" for c, s in _LABEL_CELLS]

# Generic templates (CoOp's "a photo of a {}." among them) and per-domain ones, for captions.
TEMPLATES: Tuple[str, ...] = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a {}.",
    "a small {}.",
    "a large {}.",
    "a photo of the {}.",
    "there is a {} in the image.",
)
DOMAIN_TEMPLATES: Dict[str, Tuple[str, ...]] = {
    "ToyShapes": ("a flat {}.", "a simple {} on a plain background.", "a clean drawing of a {}."),
    "ToyTextures": ("a textured {}.", "a {} with a pattern.", "a striped or dotted {}."),
    "ToySketch": ("a sketch of a {}.", "a pencil drawing of a {}.", "an outline of a {}."),
}
DOMAINS: Tuple[str, ...] = tuple(DOMAIN_TEMPLATES)


def class_parts(label: int) -> Tuple[str, str]:
    """The (colour, shape) words of class ``label``."""
    _check_label(label)
    c, s = _LABEL_CELLS[label]
    return list(COLOURS)[c], SHAPES[s]


def captions(label: int, domain: str | None = None) -> List[str]:
    """Every caption of class ``label``: generic templates, plus ``domain``'s own when given."""
    name = CLASSNAMES[_check_label(label)]
    templates = TEMPLATES + (DOMAIN_TEMPLATES[_check_domain(domain)] if domain else ())
    return [t.format(name) for t in templates]


def _check_label(label: int) -> int:
    if not 0 <= label < len(CLASSNAMES):
        raise ValueError(f"class index must be in [0, {len(CLASSNAMES)}); got {label!r}")
    return label


def _check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise ValueError(f"toy domain must be one of {', '.join(DOMAINS)}; got {domain!r}")
    return domain


def sample_rng(seed: int, domain: str, label: int, index: int, size: int) -> np.random.Generator:
    """The random stream of one image, from a SHA-256 digest (stable across runs and machines)."""
    key = f"dassl_lite.toy/v{GENERATOR_VERSION}/{seed}/{domain}/{label}/{index}/{size}"
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


# ---------------------------------------------------------------- shape outlines (unit radius)

def _regular(n: int, phase: float = np.pi / 2, radius: float = 1.0) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _star() -> np.ndarray:
    outer, inner = _regular(5), _regular(5, np.pi / 2 + np.pi / 5, 0.42)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _cross(w: float = 0.32) -> np.ndarray:
    quarter = [(w, w), (w, 1.0), (-w, 1.0), (-w, w)]
    pts = []
    for k in range(4):  # the same arm rotated by 0, 90, 180, 270 degrees
        c, s = np.cos(k * np.pi / 2), np.sin(k * np.pi / 2)
        pts += [(c * x - s * y, s * x + c * y) for x, y in quarter[:3]]
    return 0.9 * np.array(pts)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    pts = np.stack([x, y + 2.5], axis=1)
    return pts / np.abs(pts).max()


def _moon(d: float = 0.5, r: float = 0.85) -> np.ndarray:
    xi = (1 + d * d - r * r) / (2 * d)  # the two circles cross at (xi, +-yi)
    yi = np.sqrt(1 - xi * xi)
    a = np.arctan2(yi, xi)
    outer = np.linspace(a, 2 * np.pi - a, 48)  # the long way round the unit circle
    b = np.arctan2(yi, xi - d)
    inner = np.linspace(2 * np.pi - b, b, 36)  # back along the bite circle, inside the disc
    pts = np.concatenate([np.stack([np.cos(outer), np.sin(outer)], 1),
                          np.stack([d + r * np.cos(inner), r * np.sin(inner)], 1)])
    return pts + np.array([0.3, 0.0])


def _arrow() -> np.ndarray:
    return np.array([(-1, -0.2), (0.15, -0.2), (0.15, -0.55), (1, 0), (0.15, 0.55),
                     (0.15, 0.2), (-1, 0.2)], dtype=float)


_OUTLINES: Dict[str, np.ndarray] = {
    "circle": _regular(64, radius=0.88),
    "square": _regular(4, np.pi / 4, 1.1),
    "triangle": _regular(3),
    "star": _star(),
    "cross": _cross(),
    "heart": _heart(),
    "moon": _moon(),
    "arrow": _arrow(),
}
assert set(_OUTLINES) == set(SHAPES), "every shape needs an outline"


# ---------------------------------------------------------------- per-image geometry and colour

def _placed_outline(shape: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """The shape's vertices in pixel coordinates: random size, rotation, aspect and position."""
    radius = rng.uniform(0.20, 0.36) * size
    angle = np.deg2rad(rng.uniform(-35, 35))
    aspect = rng.uniform(0.88, 1.12)
    pts = _OUTLINES[shape] * np.array([aspect, 1 / aspect])
    c, s = np.cos(angle), np.sin(angle)  # rotate without BLAS (safe in forked workers)
    pts = np.stack([c * pts[:, 0] - s * pts[:, 1], -(s * pts[:, 0] + c * pts[:, 1])], axis=1)
    pts = pts * radius  # the minus above: y points down in images
    margin = radius * 1.05
    centre = rng.uniform(margin, size - margin, size=2)
    return pts + centre


def _jitter_colour(rgb: Tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    h, s, v = colorsys.rgb_to_hsv(*rgb)
    h = (h + rng.uniform(-0.015, 0.015)) % 1.0
    s = float(np.clip(s * rng.uniform(0.85, 1.1), 0, 1))
    v = float(np.clip(v * rng.uniform(0.85, 1.08), 0, 1))
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def _muted_colour(rng: np.random.Generator, max_sat: float = 0.25) -> np.ndarray:
    """A low-saturation colour, so backgrounds never compete with the class colour."""
    hsv = (rng.uniform(), rng.uniform(0, max_sat), rng.uniform(0.35, 0.95))
    return np.array(colorsys.hsv_to_rgb(*hsv))


def _mask(pts: np.ndarray, size: int, outline_width: float = 0.0) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of the polygon (filled) or of its stroke (width > 0)."""
    big = Image.new("L", (size * _SUPERSAMPLE, size * _SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(big)
    xy = [tuple(p) for p in pts * _SUPERSAMPLE]
    if outline_width > 0:
        draw.line(xy, fill=255, width=max(1, round(outline_width * _SUPERSAMPLE)), joint="curve")
    else:
        draw.polygon(xy, fill=255)
    return np.asarray(big.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def _grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    ax = (np.arange(size, dtype=np.float32) + 0.5) * (64.0 / size)  # pattern units: 64px image
    return np.meshgrid(ax, ax)


def _pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    """A two-tone pattern in {0, 1}: stripes, checks or dots at a random scale and angle."""
    xx, yy = _grid(size)
    a = rng.uniform(0, np.pi)
    u, v = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
    period = rng.uniform(3.0, 7.0)
    kind = rng.integers(3)
    if kind == 0:
        pattern = np.floor(u / period) % 2
    elif kind == 1:
        pattern = (np.floor(u / period) + np.floor(v / period)) % 2
    else:
        du, dv = (u / period) % 2 - 1, (v / period) % 2 - 1
        pattern = du * du + dv * dv < rng.uniform(0.25, 0.5)
    return pattern.astype(np.float32)


def _gradient(c0: np.ndarray, c1: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    xx, yy = _grid(size)
    a = rng.uniform(0, 2 * np.pi)
    t = (xx * np.cos(a) + yy * np.sin(a)) / 64.0
    t = ((t - t.min()) / max(float(np.ptp(t)), 1e-6))[..., None]
    return c0 * (1 - t) + c1 * t


def _add_noise(img: np.ndarray, rng: np.random.Generator, max_std: float) -> np.ndarray:
    """Grey (luminance) Gaussian noise of random strength, in half of the images."""
    if rng.uniform() < 0.5:
        return img
    return img + rng.normal(0, rng.uniform(0.2, 1.0) * max_std, img.shape[:2] + (1,))


def _composite(bg: np.ndarray, fg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return bg * (1 - alpha[..., None]) + fg * alpha[..., None]


# ---------------------------------------------------------------- the three domains

def _render_shapes(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    colour, shape = class_parts(label)
    fg = _jitter_colour(COLOURS[colour], rng)
    c0 = _muted_colour(rng)
    c1 = _muted_colour(rng) if rng.uniform() < 0.6 else c0
    img = _gradient(c0, c1, rng, size)
    pts = _placed_outline(shape, rng, size)
    if rng.uniform() < 0.3:  # soft drop shadow
        shadow = _mask(pts + rng.uniform(1, 3, size=2) * size / 64, size)
        img = _composite(img, img * 0.6, shadow * 0.5)
    img = _composite(img, fg, _mask(pts, size))
    return _add_noise(img, rng, 0.02), pts


def _render_textures(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    colour, shape = class_parts(label)
    fg0 = _jitter_colour(COLOURS[colour], rng)
    # the class colour against a near-black or near-white tone: a darker or paler shade of the
    # class colour would be another class's colour (dark orange is brown, pale red is pink)
    fg1 = np.full(3, rng.choice([rng.uniform(0.05, 0.2), rng.uniform(0.85, 1.0)]))
    fill = _composite(np.broadcast_to(fg0, (size, size, 3)), fg1, _pattern(rng, size))
    b0, b1 = _muted_colour(rng, 0.2), _muted_colour(rng, 0.2)
    img = _composite(np.broadcast_to(b0, (size, size, 3)), b1, _pattern(rng, size))
    img = _composite(img, _gradient(b0, b1, rng, size), np.full((size, size), 0.3))
    pts = _placed_outline(shape, rng, size)
    img = _composite(img, fill, _mask(pts, size))
    return _add_noise(img, rng, 0.03), pts


def _wobbly_stroke(pts: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """The closed outline resampled along its perimeter, wobbled smoothly, with an overshoot."""
    closed = np.concatenate([pts, pts[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)]) / seg.sum()
    t = np.linspace(0, 1 + rng.uniform(0.02, 0.1), 120) + rng.uniform()
    t_mod = t % 1.0
    line = np.stack([np.interp(t_mod, s, closed[:, k]) for k in range(2)], axis=1)
    amp = rng.uniform(0.3, 1.0) * size / 64
    for freq in (2, 3, 5):
        phase = rng.uniform(0, 2 * np.pi, size=2)
        line += amp / freq * np.stack([np.sin(2 * np.pi * freq * t + p) for p in phase], axis=1)
    return line


def _render_sketch(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    colour, shape = class_parts(label)
    ink = _jitter_colour(COLOURS[colour], rng)
    paper = rng.uniform(0.80, 0.95) + rng.uniform(-0.02, 0.02, size=3)
    img = _gradient(paper, paper - rng.uniform(0, 0.08), rng, size)
    for _ in range(rng.integers(0, 4)):  # faint grey pencil marks on the paper
        ends = rng.uniform(0, size, size=(2, 2))
        img = _composite(img, img * 0.75, _mask(ends, size, rng.uniform(0.5, 1.0)) * 0.5)
    pts = _placed_outline(shape, rng, size)
    width = rng.uniform(1.2, 2.4) * size / 64
    for _ in range(rng.integers(1, 3)):  # one or two passes of the pencil
        img = _composite(img, ink, _mask(_wobbly_stroke(pts, rng, size), size, width))
    return _add_noise(img, rng, 0.02), pts


# each returns the image (float RGB, 0..1) and the placed shape's outline (pixel coordinates)
_RENDERERS: Dict[str, Callable[[int, np.random.Generator, int],
                               Tuple[np.ndarray, np.ndarray]]] = {
    "ToyShapes": _render_shapes,
    "ToyTextures": _render_textures,
    "ToySketch": _render_sketch,
}
assert set(_RENDERERS) == set(DOMAINS), "every domain needs a renderer"


def render(domain: str, class_index: int, sample_index: int, seed: int = 0,
           size: int = 64) -> Image.Image:
    """Image ``sample_index`` of class ``class_index`` in ``domain`` (a dataset name in DOMAINS).

    A pure function of its arguments. Dataset splits use ``sample_index < PRETRAIN_INDEX_START``;
    pretraining should use indices from ``PRETRAIN_INDEX_START`` on (any domain).
    """
    return render_with_box(domain, class_index, sample_index, seed, size)[0]


def render_with_box(domain: str, class_index: int, sample_index: int, seed: int = 0,
                    size: int = 64) -> Tuple[Image.Image, Tuple[float, float, float, float]]:
    """:func:`render`'s image (the same pixels) and the shape's bounding box ``(x0, y0, x1, y1)``
    in pixels (the filled outline before any sketch wobble; y points down)."""
    _check_domain(domain)
    _check_label(class_index)
    if sample_index < 0 or size < 16:
        raise ValueError(f"need sample_index >= 0 and size >= 16; got {sample_index!r}, {size!r}")
    rng = sample_rng(seed, domain, class_index, sample_index, size)
    arr, pts = _RENDERERS[domain](class_index, rng, size)
    image = Image.fromarray(np.clip(np.rint(arr * 255), 0, 255).astype(np.uint8))
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    return image, (float(x0), float(y0), float(x1), float(y1))
