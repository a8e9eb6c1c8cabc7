"""What issue 14 must show on the toy anomaly world, through the protocol tool in one command:
AF-CLIP trained on ToyMVTec's test split and evaluated on ToyVisA (and the reverse) reaches
pixel AUROC >= 85 and image AUROC >= 80; the same model with an untrained adaptor stays below
65; the training-free ZeroshotAD baseline is reported beside it; 1-shot beats zero-shot on
pixel AUROC. On toy anomaly world v3 (normal images aligned per category) with
configs/trainers/AFCLIP/toy.yaml every bound holds for seeds 1 and 2 in both directions (measured
numbers: README, "AF-CLIP on the toy anomaly world"); the module asserts them for seed 1."""
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIRECTIONS = ("toy_mvtec -> toy_visa", "toy_visa -> toy_mvtec")


@pytest.fixture(scope="module")
def protocol(toy_anomaly_root, tmp_path_factory):
    """tools/anomaly.py --trainer AFCLIP ZeroshotAD --config-file toy --shots 1 --seeds 1."""
    from dassl_lite.protocols.anomaly import main

    out = tmp_path_factory.mktemp("afclip_protocol")
    rc = main(["--trainer", "AFCLIP", "ZeroshotAD", "--config-file", "toy",
               "--root", toy_anomaly_root, "--output-root", str(out),
               "--train-dataset", "toy_mvtec", "--test-datasets", "toy_visa",
               "--shots", "1", "--seeds", "1", "--launcher", "inprocess"], repo_root=REPO)
    assert rc == 0
    summaries = {}
    for trainer in ("AFCLIP", "ZeroshotAD"):
        with open(out / "anomaly" / f"summary_{trainer}_toy.json") as f:
            summaries[trainer] = json.load(f)["directions"]
    return summaries


def mean(summary, direction, shots, metric):
    return summary[direction][str(shots)][metric]["mean"]


@pytest.mark.slow
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_zero_shot_pixel_auroc_at_least_85(protocol, direction):
    assert mean(protocol["AFCLIP"], direction, 0, "pixel_auroc") >= 85
    assert 0 <= mean(protocol["ZeroshotAD"], direction, 0, "pixel_auroc") <= 100  # beside it


@pytest.mark.slow
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_zero_shot_image_auroc_at_least_80(protocol, direction):
    assert mean(protocol["AFCLIP"], direction, 0, "image_auroc") >= 80


@pytest.mark.slow
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_one_shot_beats_zero_shot_on_pixels(protocol, direction):
    afclip = protocol["AFCLIP"]
    assert mean(afclip, direction, 1, "pixel_auroc") > mean(afclip, direction, 0, "pixel_auroc")


@pytest.mark.slow
def test_untrained_adaptor_stays_below_65(toy_anomaly_root, anomaly_trainer, tmp_path):
    trainer = anomaly_trainer("AFCLIP", toy_anomaly_root, tmp_path, "toy_visa")
    trainer.test()
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    assert results["pixel_auroc"] < 65 and results["image_auroc"] < 65


# Issue 29: every trained method beats the training-free ZeroshotAD on the toy world. Measured
# with this command (seed 1, docs/anomaly.md): pixel AUROC 87.9 vs 68.7 (ToyMVTec -> ToyVisA)
# and 88.8 vs 46.2 (back); image AUROC 81.1 vs 75.5 and 84.9 vs 63.7.
MARGINS = {"pixel_auroc": 15.0, "image_auroc": 3.0}


@pytest.mark.slow
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_zero_shot_beats_zeroshotad_by_margins(protocol, direction):
    for metric, margin in MARGINS.items():
        afclip = mean(protocol["AFCLIP"], direction, 0, metric)
        assert afclip >= mean(protocol["ZeroshotAD"], direction, 0, metric) + margin, (metric, afclip)
