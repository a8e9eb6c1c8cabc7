"""tools/train.py end to end, as a user runs it (subprocesses)."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(REPO, "tests", "fixtures")


def train_py(*args, cwd=REPO):
    cmd = [sys.executable, os.path.join(REPO, "tools", "train.py"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def tiny_args(root, out, *extra):
    return ["--import", os.path.join(FIX, "tiny_world.py"), "--trainer", "TinyNet",
            "--root", root, "--output-dir", str(out), "--seed", "1",
            "--dataset-config-file", os.path.join(FIX, "tiny_dataset.yaml"),
            "--config-file", os.path.join(FIX, "tiny_trainer.yaml"), *extra]


def test_misspelt_trainer_suggests_closest(tmp_path):
    r = train_py("--import", os.path.join(FIX, "tiny_world.py"), "--trainer", "TinyNett",
                 "--output-dir", str(tmp_path))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "error: No trainer 'TinyNett' in TRAINER registry. Did you mean 'TinyNet'?" in r.stderr


def test_unknown_key_names_closest(tmp_path, tiny_root):
    r = train_py(*tiny_args(tiny_root, tmp_path / "o", "OPTIM.LRR", "0.1"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        "error: Unknown config key 'OPTIM.LRR' in command-line options. Did you mean 'OPTIM.LR'?"
    )


def test_list_trainers_and_datasets(tmp_path):
    r = train_py("--import", os.path.join(FIX, "tiny_world.py"), "--list-trainers", "--list-datasets")
    assert r.returncode == 0, r.stderr
    names = r.stdout.split()
    assert "TinyNet" in names and "TinyColors" in names


@pytest.mark.slow
def test_train_then_eval_only(tmp_path, tiny_root):
    out = tmp_path / "run"
    r = train_py(*tiny_args(tiny_root, out))
    assert r.returncode == 0, r.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "epoch [3/3] batch [6/6]" in log and "lr " in log and "eta " in log
    assert "* accuracy: " in log and "* macro_f1: " in log
    assert (out / "config.yaml").exists() and (out / "tensorboard").is_dir()
    assert "git_revision" in log and "torch" in log
    trained = json.loads((out / "results.json").read_text())
    assert trained["epoch"] == 3 and trained["num_samples"] == 16

    ev = tmp_path / "eval"
    r = train_py(*tiny_args(tiny_root, ev, "--eval-only", "--model-dir", str(out),
                            "--load-epoch", "3"))
    assert r.returncode == 0, r.stderr[-3000:]
    evaluated = json.loads((ev / "results.json").read_text())
    assert evaluated["accuracy"] == trained["accuracy"] and evaluated["epoch"] == 3

    r = train_py(*tiny_args(tiny_root, ev / "x", "--eval-only", "--model-dir", str(out),
                            "--load-epoch", "9"))
    assert r.returncode == 2 and "No checkpoint at" in r.stderr and "model.pth.tar-9" in r.stderr


def test_real_trainer_typo_suggests_coop(tmp_path):
    r = train_py("--trainer", "CoOP", "--output-dir", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: No trainer 'CoOP' in TRAINER registry. Did you mean 'CoOp'?")
    assert "toy world" not in r.stderr  # no default applied for a name that does not exist


@pytest.mark.slow
@pytest.mark.parametrize("trainer, opts", [
    ("ZeroshotCLIP2", []),  # no config folder of its own: ZeroshotCLIP's toy.yaml
    ("CoOp", ["OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "1"]),
])
def test_no_dataset_runs_the_toy_world_with_the_toy_config(tmp_path, trainer, opts):
    """The embedded default: no dataset or config file -> ToyShapes, generated on first use, with
    configs/trainers/<T>/toy.yaml and the shipped ToyCLIP."""
    root, out = tmp_path / "data", tmp_path / "out"
    r = train_py("--trainer", trainer, "--root", str(root), "--output-dir", str(out), *opts)
    assert r.returncode == 0, r.stderr[-3000:]
    toy_cfg = "ZeroshotCLIP" if trainer == "ZeroshotCLIP2" else trainer
    log = (out / "log.txt").read_text()
    for text in (r.stdout, log):  # said on the console and kept in the run's log
        assert "No dataset config given: using the toy world" in text
        assert f"configs/trainers/{toy_cfg}/toy.yaml" in text
    assert "Toy dataset ToyShapes not found under" in log and "generating it (first use)" in log
    assert (root / "toy_shapes" / "split_zhou_ToyShapes.json").is_file()
    results = json.loads((out / "results.json").read_text())
    assert (results["dataset"], results["trainer"]) == ("ToyShapes", trainer)
    assert 10 < results["accuracy"] <= 100  # chance is 1/64
