"""dassl_lite.plots and tools/plot.py: PNG/SVG files of the expected size that are not blank,
missing trainers named, failed runs left out; evaluation-only runs write TensorBoard scalars."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dassl_lite.errors import DasslLiteError
from dassl_lite.plots import (DPI, FIGSIZE, fewshot_points, plot_base2new, plot_fewshot,
                              plot_training_curves, select_trainers)
from dassl_lite.protocols.stats import average_base2new, base2new_stat, seed_stat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))


def fewshot_summary(trainer, values):
    """``values[dataset][shots] = {seed: accuracy}`` as tools/fewshot.py summarizes it."""
    per = {d: {str(k): seed_stat(v) for k, v in by_shot.items()} for d, by_shot in values.items()}
    shots = sorted({k for by_shot in values.values() for k in by_shot})
    return {"protocol": "fewshot", "trainer": trainer, "config": "toy", "seeds": [1, 2],
            "metric": "accuracy", "shots": shots, "datasets": per}


def base2new_summary(trainer, values):
    """``values[dataset] = (base {seed: acc}, new {seed: acc})``."""
    per = {d: base2new_stat(b, n) for d, (b, n) in values.items()}
    return {"protocol": "base2new", "trainer": trainer, "config": "toy", "seeds": [1, 2],
            "metric": "accuracy", "shots": 16, "datasets": per, "average": average_base2new(per)}


COOP = fewshot_summary("CoOp", {"toy_shapes": {1: {1: 40.0, 2: 44.0}, 4: {1: 60.0, 2: 62.0}},
                                "toy_sketch": {1: {1: 30.0, 2: 34.0}, 4: {1: 50.0, 2: 48.0}}})
ZS = fewshot_summary("ZeroshotCLIP", {"toy_shapes": {1: {1: 45.0, 2: 45.0}, 4: {1: 45.0, 2: 45.0}},
                                      "toy_sketch": {1: {1: 20.0, 2: 20.0}, 4: {1: 20.0, 2: 20.0}}})


def check_png(path, size=SIZE):
    """The PNG has ``size`` and real content: many colours, dark pixels (text, lines) on white."""
    image = np.asarray(Image.open(path).convert("RGB"))
    assert (image.shape[1], image.shape[0]) == size
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50
    assert (image.min(axis=2) < 100).mean() > 0.002  # some dark ink
    assert (image.min(axis=2) > 250).mean() > 0.3  # mostly white background


def test_fewshot_points_average_band_is_std_over_seeds():
    points = fewshot_points(COOP, "average")
    # 1 shot: per-seed averages (40+30)/2=35 and (44+34)/2=39 -> mean 37, population std 2
    assert points == [(1, 37.0, 2.0), (4, 55.0, 0.0)]
    assert fewshot_points(COOP, "toy_sketch")[0] == (1, 32.0, 2.0)


def test_fewshot_and_base2new_plots(tmp_path):
    paths = plot_fewshot([COOP, ZS], str(tmp_path / "fewshot"))
    assert paths == [str(tmp_path / "fewshot.png"), str(tmp_path / "fewshot.svg")]
    check_png(paths[0])
    svg = open(paths[1]).read()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "CoOp" in svg
    b2n = [base2new_summary("CoOp", {"toy_shapes": ({1: 90.0, 2: 92.0}, {1: 50.0, 2: 54.0}),
                                     "toy_sketch": ({1: 70.0, 2: 72.0}, {1: 40.0, 2: 42.0})}),
           base2new_summary("MaPLe", {"toy_shapes": ({1: 88.0, 2: 90.0}, {1: 60.0, 2: 62.0}),
                                      "toy_sketch": ({1: 71.0, 2: 70.0}, {1: 45.0, 2: 47.0})})]
    png, svg_path = plot_base2new(b2n, str(tmp_path / "b2n"))
    check_png(png)
    assert "MaPLe" in open(svg_path).read()


def test_missing_trainer_is_named():
    with pytest.raises(DasslLiteError) as e:
        select_trainers([COOP, ZS], ["CoOp", "MaPLe"])
    assert str(e.value) == ("No summary for trainer(s) MaPLe; the summaries given hold "
                            "CoOp, ZeroshotCLIP")
    assert [s["trainer"] for s in select_trainers([COOP, ZS], ["ZeroshotCLIP", "CoOp"])] == [
        "ZeroshotCLIP", "CoOp"]


def test_failed_runs_are_left_out_and_named(caplog):
    broken = fewshot_summary("CoOp", {"toy_shapes": {1: {1: 40.0, 2: None}, 4: {1: 60.0, 2: 62.0}}})
    assert fewshot_points(broken, "average") == [(4, 61.0, 1.0)]
    assert "CoOp: average at 1 shots has no value for seed(s) 2" in caplog.text


def test_tool_writes_files_and_names_a_missing_trainer(tmp_path):
    for s in (COOP, ZS):
        (tmp_path / f"fewshot_summary_{s['trainer']}_toy.json").write_text(json.dumps(s))
    files = sorted(str(p) for p in tmp_path.glob("*.json"))
    tool = [sys.executable, os.path.join(REPO, "tools", "plot.py"), "fewshot", *files]
    r = subprocess.run([*tool, "--out", str(tmp_path / "plots"), "--dataset", "toy_shapes"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "plots" / f"fewshot_toy_shapes.{f}")
                                for f in ("png", "svg")]
    check_png(tmp_path / "plots" / "fewshot_toy_shapes.png")
    r = subprocess.run([*tool, "--trainers", "MaPLe", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: No summary for trainer(s) MaPLe; the summaries given "
                                "hold CoOp, ZeroshotCLIP")
    assert not (tmp_path / "x").exists()


def test_training_curves_from_tensorboard_events(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "run" / "tensorboard"))
    for step in range(10):
        writer.add_scalar("train/loss", 2.0 / (step + 1), step)
        writer.add_scalar("train/lr", 0.002 * (1 - step / 10), step)
    writer.add_scalar("test/accuracy", 71.5, 10)
    writer.close()
    paths = plot_training_curves(str(tmp_path / "run"), str(tmp_path / "curves"))
    check_png(paths[0])
    with pytest.raises(DasslLiteError, match="No scalar train/acc in .*; it has test/accuracy, "
                                             "train/loss, train/lr"):
        plot_training_curves(str(tmp_path / "run"), str(tmp_path / "c2"), ["train/acc"])
    with pytest.raises(DasslLiteError, match="No TensorBoard events in"):
        plot_training_curves(str(tmp_path), str(tmp_path / "c3"))


def test_eval_only_run_writes_tensorboard_scalars(make_cfg, build_seeded, tmp_path):
    from dassl_lite.plots import read_scalars

    cfg = make_cfg(output_dir=tmp_path / "eval")
    trainer = build_seeded(cfg)
    accuracy = trainer.test()  # no train(): the writer was never opened
    scalars = read_scalars(str(tmp_path / "eval"))
    assert scalars["test/accuracy"] == [(0, pytest.approx(accuracy))]
    assert "test/macro_f1" in scalars
