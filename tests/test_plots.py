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


# ---------------------------------------------------------------- figures people read

B2N = [base2new_summary("CoOp", {"toy_shapes": ({1: 90.0, 2: 92.0}, {1: 50.0, 2: 54.0})}),
       base2new_summary("MaPLe", {"toy_shapes": ({1: 88.0, 2: 90.0}, {1: 60.0, 2: 62.0})})]


def test_value_range_is_around_the_data():
    from dassl_lite.plots import value_range

    # lowest mean - std 48, highest 92 + 2 = 94: span 46, margin 0.15 * 46 = 6.9
    assert value_range([(50.0, 2.0), (92.0, 2.0)]) == pytest.approx((41.1, 100.0))
    assert value_range([(70.0, 0.0), (71.0, 0.0)]) == (68.0, 73.0)  # at least 2 units
    assert value_range([]) == (0.0, 100.0)


def test_base2new_axis_and_legend_outside_the_bars(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    saved = {}
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: saved.setdefault("fig", fig))
    plot_base2new(B2N, str(tmp_path / "b2n"), formats=("png",))
    fig = saved["fig"]
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert 38 < lo < 50 and hi > 92  # new 50..62 -> the axis starts near the data, not at 0
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.x0 >= ax.get_window_extent(renderer).x1  # right of the axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["base", "new", "HM", "CoOp", "MaPLe"]
    hatches = {p.get_hatch() for p in ax.patches}
    assert len(hatches) == 2  # one per trainer


def write_events(folder, losses, acc=None):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder / "tensorboard"))
    for step, loss in enumerate(losses):
        writer.add_scalar("train/loss", loss, step * 10)
        writer.add_scalar("train/lr", 0.002, step * 10)
    if acc is not None:
        writer.add_scalar("test/accuracy", acc, 10 * len(losses))
    writer.close()


def test_smoothing_is_tensorboards_debiased_average():
    from dassl_lite.plots import smooth_ema

    assert smooth_ema([1.0, 3.0], 0.0) == [1.0, 3.0]
    # w=0.5: ema 0.5, 0.5*0.5 + 0.5*3 = 1.75; debiased by 1 - 0.5, 1 - 0.25
    assert smooth_ema([1.0, 3.0], 0.5) == pytest.approx([1.0, 1.75 / 0.75])
    with pytest.raises(DasslLiteError, match=r"--smooth must be >= 0 and < 1 .*; got 1.0"):
        smooth_ema([1.0], 1.0)


def test_curves_overlay_runs_with_axis_labels_and_smoothing(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    for seed in (1, 2):
        write_events(tmp_path / "CoOp" / f"seed{seed}",
                     list(2.0 - 0.1 * np.arange(20) + 0.3 * rng.standard_normal(20)), 70.0 + seed)
    runs = [str(tmp_path / "CoOp" / "seed1"), str(tmp_path / "CoOp" / "seed2")]
    saved = {}
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: saved.setdefault("fig", fig))
    plot_training_curves(runs, str(tmp_path / "c"), formats=("png",), smooth=0.6)
    fig = saved["fig"]
    by_title = {ax.get_title(): ax for ax in fig.axes}
    assert sorted(by_title) == ["test/accuracy", "train/loss", "train/lr"]
    loss = by_title["train/loss"]
    assert (loss.get_xlabel(), loss.get_ylabel()) == ("iteration", "loss")
    assert (by_title["test/accuracy"].get_xlabel(), by_title["test/accuracy"].get_ylabel()) == (
        "step", "accuracy (%)")
    assert len(loss.lines) == 4  # per run: faint raw + smoothed
    assert [line.get_alpha() for line in loss.lines] == [0.25, None, 0.25, None]
    assert len(by_title["train/lr"].lines) == 2  # a schedule is not smoothed
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["seed1", "seed2"]
    assert fig._suptitle.get_text() == "Training curves: seed1, seed2 (smoothed 0.6)"


def test_curves_tool_overlays_several_runs(tmp_path):
    for seed in (1, 2):
        write_events(tmp_path / f"seed{seed}", [2.0, 1.5, 1.0])
    tool = [sys.executable, os.path.join(REPO, "tools", "plot.py"), "curves",
            str(tmp_path / "seed1"), str(tmp_path / "seed2"), "--out", str(tmp_path / "p"),
            "--formats", "png"]
    r = subprocess.run(tool, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "p" / "curves_compare.png")]
    check_png(tmp_path / "p" / "curves_compare.png")
    r = subprocess.run([*tool, "--smooth", "1.5"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--smooth must be >= 0 and < 1" in r.stderr


# ---------------------------------------------------------------- summaries that are not

@pytest.mark.parametrize("content, message", [
    ([1, 2], "{path} holds a JSON list; expected a base2new summary (an object with keys "
             "protocol, trainer, metric, datasets; tools/base2new.py writes them as "
             "summary_*.json)"),
    ({"protocol": "base2new", "trainer": "CoOp", "datasets": {}},
     "{path}: lacks 'metric'; expected keys protocol, trainer, metric, datasets "
     "(tools/base2new.py writes them as summary_*.json)"),
    ({"protocol": "base2new", "trainer": "CoOp", "metric": "accuracy",
      "datasets": {"toy_shapes": {"base": {"mean": 1, "std": 0, "missing": []},
                                  "new": {"mean": 1, "std": 0}}}},
     "{path}: datasets.toy_shapes lacks 'hm'; expected keys base, new, hm "
     "(tools/base2new.py writes them as summary_*.json)"),
    ({"protocol": "fewshot"}, "{path} is a 'fewshot' summary; expected a 'base2new' summary "
                              "(tools/base2new.py writes them as summary_*.json)"),
])
def test_tool_names_the_file_and_what_a_summary_lacks(tmp_path, content, message):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(content))
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "plot.py"), "base2new",
                        str(path), "--out", str(tmp_path / "p")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: " + message.format(path=path)
    assert not (tmp_path / "p").exists()


def test_fewshot_summary_without_a_shot_entry_is_named(tmp_path):
    from dassl_lite.plots import load_summaries

    broken = json.loads(json.dumps(COOP))
    del broken["datasets"]["toy_sketch"]["4"]["per_seed"]
    path = tmp_path / "s.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(DasslLiteError) as e:
        load_summaries([str(path)], "fewshot")
    assert str(e.value) == (f"{path}: datasets.toy_sketch.4 lacks 'per_seed'; expected keys "
                            f"per_seed, missing (tools/fewshot.py writes them as summary_*.json)")
