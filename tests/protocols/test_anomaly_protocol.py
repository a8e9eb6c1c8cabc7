"""tools/anomaly.py: the job plan, and a small end-to-end run with skip on the second call."""
import json
import os

import pytest

import datasets  # noqa: F401  (registers the datasets)
import trainers  # noqa: F401  (registers the trainers)
from dassl_lite.protocols.anomaly import directions, main, plan_anomaly
from dassl_lite.protocols.plans import RunSpec
from dassl_lite.protocols.resolve import resolve_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs")


def test_plan_both_directions_with_shots(tmp_path):
    ds = os.path.join(CONFIGS, "datasets")
    a, b = resolve_dataset("toy_mvtec", ds), resolve_dataset("ToyVisA", ds)
    pairs = directions(a, [b], one_way=False)
    assert [(s.label, t.label) for s, t in pairs] == [("toy_mvtec", "toy_visa"), ("toy_visa", "toy_mvtec")]
    spec = RunSpec("ZeroshotAD", os.path.join(CONFIGS, "trainers", "ZeroshotAD", "toy.yaml"),
                   str(tmp_path / "data"), str(tmp_path / "out"))
    jobs = plan_anomaly(spec, pairs, [1, 2], [1, 4])
    assert len(jobs) == 2 * 2 * (1 + 3)  # per direction and seed: a training run, k = 0, 1, 4
    train = jobs[0]
    assert train.name == "train (test split) toy_mvtec seed1 (ZeroshotAD)"
    assert train.cfg.DATASET.ANOMALY.TRAIN_SPLIT == "test" and train.cfg.DATASET.NAME == "ToyMVTec"
    assert train.output_dir == str(tmp_path / "out/anomaly/train/toy_mvtec/ZeroshotAD/toy/seed1")
    few = jobs[3]
    assert few.name == "4-shot toy_mvtec -> toy_visa seed1 (ZeroshotAD)"
    assert few.train_job is train and few.cfg.DATASET.NUM_SHOTS == 4 and few.cfg.SEED == 1
    assert few.cfg.DATASET.ANOMALY.TRAIN_SPLIT == "train" and few.cfg.DATASET.NAME == "ToyVisA"
    assert few.output_dir.endswith("anomaly/toy_mvtec_to_toy_visa/ZeroshotAD/toy/shots_4/seed1")
    assert "--eval-only" in few.flags


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["--trainer", "ZeroshotAD", "--config-file", "toy", "--root", str(tmp_path),
                 "--train-dataset", "toy_visa", "--test-datasets", "toy_visa"], REPO) == 2
    assert "No test dataset besides the training dataset 'toy_visa'" in capsys.readouterr().err
    assert main(["--trainer", "ZeroshotAD", "--config-file", "toy", "--root", str(tmp_path),
                 "--shots", "0"], REPO) == 2


@pytest.mark.slow
def test_one_way_zero_and_one_shot_then_skip(toy_anomaly_root, tmp_path, capsys):
    argv = ["--trainer", "ZeroshotAD", "--config-file", "toy", "--root", toy_anomaly_root,
            "--output-root", str(tmp_path), "--one-way", "--shots", "1", "--seeds", "1",
            "--launcher", "inprocess"]
    assert main(argv, REPO) == 0
    first = capsys.readouterr().out
    assert "| toy_mvtec -> toy_visa | zero-shot |" in first and "| toy_mvtec -> toy_visa | 1-shot" in first
    with open(tmp_path / "anomaly" / "summary_ZeroshotAD_toy.json") as f:
        summary = json.load(f)
    zs, one = (summary["directions"]["toy_mvtec -> toy_visa"][k] for k in ("0", "1"))
    assert set(zs) == {"image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap",
                       "pixel_f1max", "pixel_aupro"}
    with open(tmp_path / "anomaly/toy_mvtec_to_toy_visa/ZeroshotAD/toy/shots_0/seed1/results.json") as f:
        assert zs["pixel_auroc"]["mean"] == json.load(f)["pixel_auroc"]
    assert one["pixel_auroc"]["mean"] > zs["pixel_auroc"]["mean"]
    assert main(argv, REPO) == 0  # everything finished: skipped, same summary
    assert capsys.readouterr().out.count("skipped") == 3
    with open(tmp_path / "anomaly" / "summary_ZeroshotAD_toy.json") as f:
        assert json.load(f)["directions"] == summary["directions"]


# ------------------------------------------------- issues 26 and 28: what the console and scores.txt say
def _folder_config(path):
    path.write_text('DATASET:\n  NAME: "AnomalyFolder"\n  ANOMALY:\n    FOLDER:\n      MASK_DIR: "masks"\n'
                    'INPUT:\n  TRANSFORMS: ["normalize"]\nTEST:\n  EVALUATOR: "AnomalyDetection"\n')
    return str(path)


def _mini_world(tmp_path):
    """<data>/mvtec (MVTec miniature) and two folder categories: parts (good, bad, masks) and
    blank (normal images only)."""
    from tests.datasets.anomaly_miniatures import make_folder, make_mvtec

    data = tmp_path / "data"
    make_mvtec(data)
    make_folder(data / "parts", normal=6, abnormal=3)
    make_folder(data / "blank", normal=3, abnormal=0, masks=False)
    return data


def _argv(data, out, folder_cfg, *flags):
    return ["--trainer", "ZeroshotAD", "--config-file", "toy", "--root", str(data),
            "--output-root", str(out), "--train-dataset", "mvtec", "--test-datasets", folder_cfg,
            "--one-way", "--seeds", "1", "--launcher", "inprocess", *flags]


@pytest.mark.slow
def test_threshold_decisions_and_undefined_metrics_named(tmp_path, capsys):
    data = _mini_world(tmp_path)
    folder_cfg = _folder_config(tmp_path / "my_parts.yaml")
    assert main(_argv(data, tmp_path / "out", folder_cfg, "--threshold", "f1max"), REPO) == 0
    out = capsys.readouterr().out
    job = "zero-shot mvtec -> my_parts seed1 (ZeroshotAD)"
    assert (f"- {job}: category 'blank': image_auroc, image_ap, image_f1max undefined: only normal "
            f"test images (1 normal, 0 anomalous); the mean is over the other 1 of 2 categories") in out
    assert (f"- {job}: category 'blank': pixel_auroc, pixel_ap, pixel_f1max, pixel_aupro undefined: "
            f"no anomalous test images, so no defect pixels; the mean is over the other 1 of 2 "
            f"categories") in out
    run = tmp_path / "out/anomaly/mvtec_to_my_parts/ZeroshotAD/toy/shots_0/seed1"
    assert f"e.g. {run / 'scores.txt'}" in out
    with open(run / "results.json") as f:
        results = json.load(f)
    parts = results["threshold"]["per_category"]["parts"]
    assert results["threshold"]["mode"] == "f1max" and results["threshold"]["per_category"]["blank"] is None
    assert parts["tp"] + parts["fn"] == 3 and parts["f1"] == pytest.approx(results["per_category"]["parts"]["image_f1max"])
    lines = (run / "scores.txt").read_text().splitlines()
    assert len(lines) == 1 + 3 + 1  # parts: 1 held-out normal + 3 anomalous; blank: 1 held-out normal
    fields = [line.split(" ") for line in lines]
    assert all(len(f) == 3 for f in fields)
    scores = [float(f[0]) for f in fields]
    assert scores == sorted(scores, reverse=True)
    by_image = {f[1]: f[2] for f in fields}
    assert {v for k, v in by_image.items() if "/blank/" in k} == {"undecided"}
    decided = [(float(f[0]), f[2]) for f in fields if "/parts/" in f[1]]
    assert sum(d == "anomalous" for _, d in decided) == parts["tp"] + parts["fp"]
    assert all((s >= parts["threshold"]) == (d == "anomalous") for s, d in decided)
    # the same runs asked again with a number: re-evaluated (not "another config"), decisions at 0.5
    assert main(_argv(data, tmp_path / "out", folder_cfg, "--threshold", "0.5"), REPO) == 0
    with open(run / "results.json") as f:
        assert json.load(f)["threshold"]["mode"] == "value"
    assert all(line.split(" ")[2] == ("anomalous" if float(line.split(" ")[0]) >= 0.5 else "normal")
               for line in (run / "scores.txt").read_text().splitlines())
    capsys.readouterr()
    assert main(_argv(data, tmp_path / "out", folder_cfg, "--threshold", "half"), REPO) == 2
    assert ("--threshold must be a number (score >= it is anomalous) or 'f1max' (the F1-max threshold "
            "on the labelled test images); got 'half'") in capsys.readouterr().err


@pytest.mark.slow
def test_failed_job_shows_its_own_error_line(tmp_path, capsys):
    import numpy as np

    from tests.datasets.anomaly_miniatures import save

    data = _mini_world(tmp_path)
    soft = np.zeros((20, 30), np.uint8)
    soft[3:8, 4:12], soft[2, 4:12] = 255, 128
    save(str(data / "parts" / "masks" / "001_mask.png"), soft)
    folder_cfg = _folder_config(tmp_path / "my_parts.yaml")
    assert main(_argv(data, tmp_path / "out", folder_cfg), REPO) == 1
    out = capsys.readouterr().out
    job = "zero-shot mvtec -> my_parts seed1 (ZeroshotAD)"
    lines = out.splitlines()
    at = lines.index(next(line for line in lines if line.startswith(f"- {job}: failed: exit code 2 (log: ")))
    assert lines[at + 1] == (f"    error: Mask {data}/parts/masks/001_mask.png (the mask of image "
                             f"{data}/parts/bad/001.png) holds the values {{0, 128, 255}} (3 distinct): "
                             f"expected only 0 (normal) and 255 (defect), or 0 and 1. A mask resized with "
                             f"interpolation or saved as JPEG has grey levels; re-save it with "
                             f"nearest-neighbour resizing as PNG")
