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
