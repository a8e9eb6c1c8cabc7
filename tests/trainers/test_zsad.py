"""ZeroshotAD through tools/train.py on ToyVisA (the toy default of anomaly trainers), with
heatmaps; its state prompts; a 1-shot memory bank beats the text-only map."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dassl_lite.evaluation import ANOMALY_METRIC_KEYS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_state_prompts():
    from trainers.anomaly.zsad import state_prompts

    normal, anomalous = state_prompts("metal_nut")
    assert len(normal) == len(anomalous) == 9
    assert normal[0] == "a photo of a flawless metal nut." and "a photo of a damaged metal nut." in anomalous


@pytest.mark.slow
def test_train_py_on_toy_visa_writes_metrics_and_heatmaps(toy_anomaly_root, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(REPO, "tools", "train.py"), "--trainer", "ZeroshotAD",
           "--root", toy_anomaly_root, "--output-dir", str(out), "--seed", "1", "--save-maps"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out / "results.json") as f:
        res = json.load(f)
    assert res["dataset"] == "ToyVisA" and res["trainer"] == "ZeroshotAD"
    assert all(0 <= res[k] <= 100 for k in ANOMALY_METRIC_KEYS)
    assert sorted(res["per_category"]) == ["mesh", "orange_heart", "pink_moon", "purple_cross",
                                           "yellow_star"]
    assert res["num_samples"] == 125 and res["input_size"] == [128, 128]
    log = (out / "log.txt").read_text()
    assert "toy_visa.yaml" in log and "* pixel_aupro: " in log
    heat = out / "maps" / "pink_moon" / "Anomaly_000.png"
    image = Image.open(os.path.join(toy_anomaly_root, "toy_visa", "pink_moon", "Data", "Images",
                                    "Anomaly", "000.JPG"))
    overlay = Image.open(heat)
    assert overlay.size == image.size == (128, 128)
    diff = np.abs(np.asarray(overlay, int) - np.asarray(image.convert("RGB"), int))
    assert diff.mean() > 10  # the map is overlaid
    # 26 images: 5 rows of 6 tiles (132 px with padding, 3 caption lines), the colour bar
    assert Image.open(out / "maps" / "pink_moon" / "grid.png").size == (4 + 6 * 132 + 64,
                                                                        4 + 5 * (132 + 3 * 13))


@pytest.mark.slow
def test_one_shot_memory_bank_beats_text_only(toy_anomaly_root, anomaly_trainer, tmp_path):
    auroc = {}
    for shots in (0, 1):
        trainer = anomaly_trainer("ZeroshotAD", toy_anomaly_root, tmp_path / str(shots), "toy_visa",
                                  "DATASET.NUM_SHOTS", str(shots),
                                  "DATASET.ANOMALY.CATEGORIES", "('mesh', 'pink_moon')")
        trainer.test()
        with open(tmp_path / str(shots) / "results.json") as f:
            auroc[shots] = json.load(f)["pixel_auroc"]
    assert auroc[1] > auroc[0] + 3, auroc
    assert auroc[1] >= 90, auroc  # ANOMALY.md: a 1-shot bank on an aligned toy object


@pytest.mark.slow
def test_heatmap_tool_on_a_folder(toy_anomaly_root, tmp_path, capsys):
    import shutil

    from tools.anomaly_heatmap import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    src = os.path.join(toy_anomaly_root, "toy_visa", "yellow_star", "Data", "Images")
    shutil.copy(os.path.join(src, "Anomaly", "000.JPG"), folder / "bad.jpg")
    shutil.copy(os.path.join(src, "Normal", "0000.JPG"), folder / "good.jpg")
    out = tmp_path / "heat"
    assert main(["--trainer", "ZeroshotAD", "--config-file", "toy", "--input", str(folder),
                 "--category", "yellow star", "--output", str(out)]) == 0
    lines = (out / "scores.txt").read_text().splitlines()
    assert len(lines) == 2 and {line.split()[1] for line in lines} == {str(folder / "bad.jpg"), str(folder / "good.jpg")}
    assert lines == capsys.readouterr().out.strip().splitlines()[-2:]
    for name in ("bad", "good"):
        overlay = np.asarray(Image.open(out / f"{name}.png"), int)
        image = np.asarray(Image.open(folder / f"{name}.jpg").convert("RGB"), int)
        assert overlay.shape == image.shape == (128, 128, 3) and np.abs(overlay - image).mean() > 10
    assert (out / "grid.png").is_file()
    assert main(["--trainer", "ZeroshotAD", "--config-file", "toy", "--input", str(tmp_path / "none"),
                 "--output", str(out)]) == 2


def test_memory_weight_out_of_range_is_refused(toy_anomaly_root, anomaly_trainer, tmp_path):
    from dassl_lite.config import ConfigError

    with pytest.raises(ConfigError, match=r"TRAINER.ZSAD.MEMORY_WEIGHT must be a number >= 0.0 "
                                          r"and <= 1.0; got 1.5"):
        anomaly_trainer("ZeroshotAD", toy_anomaly_root, tmp_path, "toy_visa",
                        "TRAINER.ZSAD.MEMORY_WEIGHT", "1.5")
