"""``tools/train.py --trainer ZeroshotCLIP --eval-only`` with the toy CLIP on benchmark miniatures
(real layouts, decodable 8x8 images), as a user runs it on the real datasets."""
import json
import os
import subprocess
import sys

import pytest

from tests.datasets.miniatures import MAKERS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = [  # dataset, its config, extra opts, test images evaluated
    ("EuroSAT", "eurosat", [], 20),
    ("EuroSAT", "eurosat", ["DATASET.SUBSAMPLE_CLASSES", "new"], 10),
    ("DescribableTextures", "dtd", ["DATASET.NUM_SHOTS", "1"], 94),
    ("OxfordPets", "oxford_pets", [], 74),
    ("FGVCAircraft", "fgvc_aircraft", [], 100),
    ("ImageNetR", "imagenet_r", [], 200),
]


@pytest.fixture(scope="module")
def toy_resolution():
    """The shipped toy CLIP's input resolution."""
    from dassl_lite.clip import load_clip

    return load_clip("ToyCLIP").visual.input_resolution


@pytest.mark.slow
@pytest.mark.parametrize("name, config, opts, num_test", CASES,
                         ids=[f"{c[0]}{'-' + '-'.join(c[2]) if c[2] else ''}" for c in CASES])
def test_zeroshot_clip_eval_only(name, config, opts, num_test, toy_resolution, tmp_path, load):
    root, out = tmp_path / "data", tmp_path / "out"
    MAKERS[name][0](str(root), images=True)
    load(name, root)  # builds and saves the split offline, so the run does not try to download it
    size = f"({toy_resolution}, {toy_resolution})"
    cmd = [sys.executable, os.path.join(REPO, "tools", "train.py"), "--trainer", "ZeroshotCLIP",
           "--root", str(root), "--output-dir", str(out), "--seed", "1", "--eval-only",
           "--dataset-config-file", os.path.join(REPO, "configs", "datasets", f"{config}.yaml"),
           "--config-file", os.path.join(REPO, "configs", "trainers", "ZeroshotCLIP", "vit_b16.yaml"),
           "MODEL.BACKBONE.NAME", "ToyCLIP", "INPUT.SIZE", size, "TRAINER.COOP.PREC", "fp32",
           "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "50", *opts]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(out / "results.json") as f:
        results = json.load(f)
    assert (results["dataset"], results["trainer"], results["split"]) == (name, "ZeroshotCLIP", "test")
    assert results["num_samples"] == num_test and 0.0 <= results["accuracy"] <= 100.0
    log = (out / "log.txt").read_text()
    assert f"* total: {num_test:,}" in log and "* accuracy: " in log
