"""The toy world's renderer: class list, label order, captions, determinism, domains."""
import colorsys
import hashlib
import io
import re

import numpy as np
import pytest

from datasets.toy_generator import (CLASSNAMES, COLOURS, DOMAINS, SHAPES, captions, class_parts,
                                    render)


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def test_class_list_is_64_unique_two_word_names():
    assert len(CLASSNAMES) == 64 == len(set(CLASSNAMES))
    assert all(re.fullmatch(r"[a-z]+ [a-z]+", name) for name in CLASSNAMES)
    assert sorted(CLASSNAMES) == sorted(f"{c} {s}" for c in COLOURS for s in SHAPES)
    assert CLASSNAMES[:4] == ["red circle", "red square", "red triangle", "red star"]
    assert CLASSNAMES[32:36] == ["red cross", "red heart", "red moon", "red arrow"]
    assert class_parts(33) == ("red", "heart")


def test_every_colour_and_shape_is_in_both_halves_four_times():
    halves = {"base": range(0, 32), "new": range(32, 64)}
    for labels in halves.values():
        parts = [class_parts(label) for label in labels]
        assert {c: sum(p[0] == c for p in parts) for c in COLOURS} == {c: 4 for c in COLOURS}
        assert {s: sum(p[1] == s for p in parts) for s in SHAPES} == {s: 4 for s in SHAPES}


def test_base_half_links_all_colours_and_shapes():
    """The base pairs form one connected colour-shape graph (no shape predicts a colour subset)."""
    edges = [class_parts(label) for label in range(32)]
    reached, frontier = {"red"}, ["red"]
    while frontier:
        node = frontier.pop()
        for c, s in edges:
            for a, b in ((c, s), (s, c)):
                if a == node and b not in reached:
                    reached.add(b)
                    frontier.append(b)
    assert reached == set(COLOURS) | set(SHAPES)


def test_captions():
    assert captions(0)[0] == "a photo of a red circle."
    sketch = captions(0, "ToySketch")
    assert "a sketch of a red circle." in sketch and len(sketch) == len(captions(0)) + 3
    with pytest.raises(ValueError, match=r"toy domain must be one of ToyShapes, ToyTextures, "
                                         r"ToySketch; got 'Toy'"):
        captions(0, "Toy")


@pytest.mark.parametrize("domain", DOMAINS)
def test_render_is_deterministic_and_varies(domain):
    a = png_bytes(render(domain, 5, 3, seed=0))
    assert a == png_bytes(render(domain, 5, 3, seed=0))
    assert a != png_bytes(render(domain, 5, 3, seed=1))
    assert a != png_bytes(render(domain, 5, 4, seed=0))
    image = render(domain, 5, 3, seed=0)
    assert (image.size, image.mode) == ((64, 64), "RGB")
    assert render(domain, 5, 3, seed=0, size=32).size == (32, 32)


def test_render_pixels_are_pinned():
    """Changing a renderer changes the data: bump GENERATOR_VERSION and update these digests."""
    digests = [hashlib.sha256(render(d, 7, 2, seed=0).tobytes()).hexdigest()[:16] for d in DOMAINS]
    assert digests == PINNED


def test_render_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"class index must be in \[0, 64\); got 64"):
        render("ToyShapes", 64, 0)
    with pytest.raises(ValueError, match="toy domain must be one of .*; got 'toy_shapes'"):
        render("toy_shapes", 0, 0)
    with pytest.raises(ValueError, match="need sample_index >= 0 and size >= 16; got -1, 64"):
        render("ToyShapes", 0, -1)


def _hsv_distance(a, b) -> float:
    (h1, s1, v1), (h2, s2, v2) = colorsys.rgb_to_hsv(*a), colorsys.rgb_to_hsv(*b)
    dh = min(abs(h1 - h2), 1 - abs(h1 - h2))
    return 5 * dh + 0.5 * abs(s1 - s2) + abs(v1 - v2)


def _dominant_colour(image) -> str:
    """The class colour nearest to the saturation-weighted mean colour of the coloured pixels."""
    rgb = np.asarray(image, dtype=np.float64).reshape(-1, 3) / 255.0
    sat = (rgb.max(1) - rgb.min(1)) / np.maximum(rgb.max(1), 1e-6)
    weight = np.where(sat > 0.3, sat ** 2, 0.0)
    mean = (rgb * weight[:, None]).sum(0) / weight.sum()
    return min(COLOURS, key=lambda name: _hsv_distance(mean, COLOURS[name]))


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_class_colour_is_the_most_saturated_colour(domain):
    wrong = [(label, i) for label in range(64) for i in range(3)
             if _dominant_colour(render(domain, label, i)) != class_parts(label)[0]]
    assert wrong == []


PINNED = ["eba73d32e2ba98ff", "0f1f544d67fd81ab", "18f5b1623018d54e"]
