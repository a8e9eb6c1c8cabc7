"""tools/anomaly_heatmap.py --threshold: a decision column in scores.txt, from a number or a recorded threshold."""
import json

import numpy as np
import pytest
from PIL import Image

from tools.anomaly_heatmap import main


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        arr = np.full((32, 32, 3), 60 * i, np.uint8)
        arr[8:16, 8:16] = 255 - 60 * i
        Image.fromarray(arr).save(images / f"{i}.png")
    return images


def run(folder, out, *flags):
    return main(["--trainer", "ZeroshotAD", "--config-file", "toy", "--input", str(folder),
                 "--category", "metal nut", "--output", str(out), *flags])


@pytest.mark.slow
def test_threshold_value_and_recorded(folder, tmp_path, capsys):
    assert run(folder, tmp_path / "plain") == 0
    plain = (tmp_path / "plain" / "scores.txt").read_text().splitlines()
    assert all(len(line.split(" ")) == 2 for line in plain)  # no threshold: the old two columns
    scores = sorted(float(line.split(" ")[0]) for line in plain)
    middle = (scores[0] + scores[1]) / 2
    assert run(folder, tmp_path / "cut", "--threshold", str(middle)) == 0
    lines = (tmp_path / "cut" / "scores.txt").read_text().splitlines()
    assert [line.rsplit(" ", 1)[0] for line in lines] == plain  # the old columns first, unchanged
    assert [line.rsplit(" ", 1)[1] for line in lines] == ["anomalous", "anomalous", "normal"]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"threshold": {"mode": "f1max", "per_category": {
        "metal_nut": {"threshold": scores[2] + 1.0}}}}))
    assert run(folder, tmp_path / "rec", "--threshold", str(results)) == 0
    assert {line.rsplit(" ", 1)[1] for line in (tmp_path / "rec" / "scores.txt").read_text().splitlines()} == {"normal"}
    capsys.readouterr()
    assert run(folder, tmp_path / "f1", "--threshold", "f1max") == 2
    assert "--threshold f1max needs labelled images: evaluate a labelled set with tools/anomaly.py " \
           "--threshold f1max and pass its results.json here" in capsys.readouterr().err
    assert run(folder, tmp_path / "cat", "--threshold", str(results), "--category", "bolt") == 2
    assert "records no threshold for category 'bolt'; it has metal_nut" in capsys.readouterr().err
