"""tools/anomaly_heatmap.py --save-maps: the raw maps (.npy) are exactly what each overlay
shows (on the joint colour scale), and the grid carries captions and a colour bar."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from dassl_lite.utils.image import read_image
from dassl_lite.evaluation.anomaly_maps import GRID_PAD, GRID_TILE, LINE_HEIGHT, overlay


@pytest.mark.slow
def test_save_maps_writes_the_maps_behind_the_overlays(toy_anomaly_root, tmp_path, capsys):
    from tools.anomaly_heatmap import main

    src = os.path.join(toy_anomaly_root, "toy_visa", "yellow_star", "Data", "Images")
    folder = tmp_path / "imgs"
    for name, (kind, file) in {"bad": ("Anomaly", "001.JPG"), "good": ("Normal", "0001.JPG")}.items():
        folder.mkdir(exist_ok=True)
        shutil.copy(os.path.join(src, kind, file), folder / f"{name}.jpg")
    args = ["--trainer", "ZeroshotAD", "--config-file", "toy", "--input", str(folder),
            "--category", "yellow star"]
    out = tmp_path / "heat"
    assert main([*args, "--output", str(out), "--save-maps"]) == 0
    maps = {name: np.load(out / f"{name}.npy") for name in ("bad", "good")}
    assert all(m.shape == (128, 128) and m.dtype == np.float32 for m in maps.values())
    lo = min(float(m.min()) for m in maps.values())
    hi = max(float(m.max()) for m in maps.values())
    for name, amap in maps.items():
        redrawn = overlay(read_image(str(folder / f"{name}.jpg")), amap, vmin=lo, vmax=hi)
        assert np.array_equal(np.asarray(redrawn), np.asarray(Image.open(out / f"{name}.png")))
    grid = Image.open(out / "grid.png")
    cell = GRID_TILE + GRID_PAD
    assert grid.size == (GRID_PAD + 2 * cell + 64, GRID_PAD + cell + 2 * LINE_HEIGHT)
    without = tmp_path / "plain"
    assert main([*args, "--output", str(without)]) == 0
    assert not list(without.glob("*.npy"))  # raw maps only on request


def test_score_images_runs_the_trainers_test_hooks_around_inference():
    """APRIL-GAN / AF-CLIP build their few-shot memory banks in before_test: without it the
    heatmaps silently showed the zero-shot maps."""
    import contextlib
    import types

    import torch

    from tools.anomaly_heatmap import score_images

    calls = []

    class Trainer:
        device = torch.device("cpu")
        precision = types.SimpleNamespace(autocast=contextlib.nullcontext)
        cfg = types.SimpleNamespace(TEST=types.SimpleNamespace(
            ANOMALY=types.SimpleNamespace(MAP_SIGMA=0)))
        test_loader = [{"img": torch.zeros(2, 3, 8, 8), "category": ["a", "a"],
                        "impath": ["x.png", "y.png"]}]

        def set_model_mode(self, mode):
            calls.append(mode)

        def before_test(self):
            calls.append("before")

        def after_test(self):
            calls.append("after")

        def model_inference(self, images):
            calls.append("infer")
            if "before" not in calls:
                raise AssertionError("inference before before_test")
            return {"anomaly_map": torch.rand(2, 4, 4), "image_score": torch.tensor([0.1, 0.9])}

    paths, scores, maps = score_images(Trainer())
    assert calls == ["eval", "before", "infer", "after"]
    assert paths == ["x.png", "y.png"] and maps.shape == (2, 8, 8)
    assert scores == pytest.approx([0.1, 0.9])
