"""scripts/<trainer>/*.sh and scripts/common.sh, with a stand-in for python that records the
tools/train.py calls (and a real TinyNet run, marked slow)."""
import json
import os
import stat
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(REPO, "scripts")
TRAINERS = {"coop": "CoOp", "cocoop": "CoCoOp", "maple": "MaPLe", "ivlp": "IVLP", "vpt": "VPT",
            "zsclip": "ZeroshotCLIP"}
SCRIPT_ENV = ("DATA", "CFG", "SHOTS", "OUTPUT", "SOURCE", "PYTHON", "IMPORT")

# Records its arguments and writes results.json with epoch $FAKE_EPOCH (as a run would).
FAKE_PYTHON = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["CALLS"], "a") as f:
    f.write(" ".join(args) + "\\n")
out = args[args.index("--output-dir") + 1]
os.makedirs(out, exist_ok=True)
epoch = os.environ.get("FAKE_EPOCH", "5")
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({{"accuracy": 50.0, "epoch": None if epoch == "null" else int(epoch)}}, f, indent=2)
"""


@pytest.fixture
def sh(tmp_path):
    """``sh("coop/base2new_train.sh", *args, **env)`` -> (CompletedProcess, recorded calls)."""
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"

    def run(script, *args, **env):
        full = {k: v for k, v in os.environ.items() if k not in SCRIPT_ENV}
        full.update(PYTHON=str(fake), CALLS=str(calls), DATA="/data")
        full.update(env)
        r = subprocess.run(["bash", os.path.join(SCRIPTS, script), *args], cwd=tmp_path,
                           env={k: v for k, v in full.items() if v is not None},
                           capture_output=True, text=True, timeout=60)
        lines = calls.read_text().splitlines() if calls.exists() else []
        calls.unlink(missing_ok=True)
        return r, lines

    return run


def test_every_trainer_has_the_four_scripts_sourcing_common():
    for folder, trainer in TRAINERS.items():
        for name in ("base2new_train", "base2new_test", "xd_train", "xd_test"):
            text = open(os.path.join(SCRIPTS, folder, f"{name}.sh")).read()
            assert f"TRAINER={trainer}\n" in text and '/../common.sh"\n' in text
            assert text.rstrip().endswith(f'{name} "$@"') and "--load-epoch" not in text


def test_missing_data_and_arguments_are_explained(sh):
    r, calls = sh("coop/base2new_train.sh", "oxford_pets", "1", DATA=None)
    assert r.returncode == 2 and calls == []
    assert r.stderr == ("error: DATA is not set; point it at your dataset root, e.g. "
                        f"DATA=/path/to/datasets bash {SCRIPTS}/coop/base2new_train.sh ...\n")
    r, _ = sh("maple/xd_test.sh", "dtd")
    assert r.returncode == 2
    assert r.stderr == (f"usage: DATA=/path/to/datasets bash {SCRIPTS}/maple/xd_test.sh "
                        f"DATASET SEED [KEY VALUE ...]\n")


def test_base2new_train_then_test_reads_the_epoch_from_the_run(sh, tmp_path):
    r, calls = sh("maple/base2new_train.sh", "oxford_pets", "2", "OPTIM.MAX_EPOCH", "5")
    assert r.returncode == 0, r.stderr
    d = "output/base2new/train_base/oxford_pets/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx/seed2"
    assert calls == [
        f"{REPO}/tools/train.py --root /data --trainer MaPLe --config-file "
        f"{REPO}/configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml --seed 2 "
        f"--dataset-config-file {REPO}/configs/datasets/oxford_pets.yaml --output-dir {d} "
        f"OPTIM.MAX_EPOCH 5 DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base"]
    assert r.stdout == f"Run this job and save the output to {d}\n"

    r, calls = sh("maple/base2new_test.sh", "oxford_pets", "2", FAKE_EPOCH="5")
    t = d.replace("train_base", "test_new")
    assert calls == [
        f"{REPO}/tools/train.py --root /data --trainer MaPLe --config-file "
        f"{REPO}/configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml --seed 2 "
        f"--dataset-config-file {REPO}/configs/datasets/oxford_pets.yaml --output-dir {t} "
        f"--model-dir {d} --load-epoch 5 --eval-only DATASET.NUM_SHOTS 16 "
        f"DATASET.SUBSAMPLE_CLASSES new"]

    for script in ("maple/base2new_train.sh", "maple/base2new_test.sh"):  # finished: skipped
        r, calls = sh(script, "oxford_pets", "2")
        assert calls == [] and r.stdout.endswith("(results.json). Skip this job\n")

    # the training run was extended to epoch 7: the evaluation is stale and is redone
    (tmp_path / d / "results.json").write_text(json.dumps({"epoch": 7}, indent=2))
    r, calls = sh("maple/base2new_test.sh", "oxford_pets", "2")
    assert len(calls) == 1 and "--load-epoch 7 --eval-only" in calls[0]


def test_test_without_training_run_fails_clearly(sh):
    r, calls = sh("cocoop/base2new_test.sh", "dtd", "1")
    assert r.returncode == 1 and calls == []
    d = "output/base2new/train_base/dtd/shots_16/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1/seed1"
    assert r.stderr == f"error: no finished training run in {d}; run the training script first\n"


def test_xd_train_and_test_with_env_overrides(sh):
    env = {"SOURCE": "toy_shapes", "CFG": "toy", "SHOTS": "4", "OUTPUT": "runs"}
    r, calls = sh("coop/xd_train.sh", "3", **env)
    assert r.returncode == 0, r.stderr
    src = "runs/toy_shapes/CoOp/toy_4shots/seed3"
    assert calls[0].endswith(f"--seed 3 --dataset-config-file {REPO}/configs/datasets/"
                             f"toy_shapes.yaml --output-dir {src} DATASET.NUM_SHOTS 4")
    r, calls = sh("coop/xd_test.sh", "toy_sketch", "3", **env)
    assert calls[0].endswith(
        f"--output-dir runs/evaluation/CoOp/toy_4shots/toy_sketch/seed3 --model-dir {src} "
        f"--load-epoch 5 --eval-only")


def test_zero_shot_runs_have_no_epoch_to_load(sh):
    r, _ = sh("zsclip/base2new_train.sh", "eurosat", "1", FAKE_EPOCH="null")
    assert r.returncode == 0, r.stderr
    r, calls = sh("zsclip/base2new_test.sh", "eurosat", "1", FAKE_EPOCH="null")
    assert r.returncode == 0, r.stderr
    assert calls[0].endswith("--model-dir output/base2new/train_base/eurosat/shots_16/ZeroshotCLIP/"
                             "vit_b16/seed1 --eval-only DATASET.NUM_SHOTS 16 "
                             "DATASET.SUBSAMPLE_CLASSES new")


@pytest.mark.slow
def test_real_tinynet_base2new_through_the_scripts(tmp_path, tiny_root):
    script = tmp_path / "tinynet.sh"
    script.write_text(f'TRAINER=TinyNet\nCFG={REPO}/tests/fixtures/tiny_trainer.yaml\n'
                      f'source {SCRIPTS}/common.sh\n"$@"\n')
    env = dict(os.environ, DATA=tiny_root, PYTHON=sys.executable, SHOTS="2",
               IMPORT=os.path.join(REPO, "tests", "fixtures", "tiny_world.py"))
    dataset = os.path.join(REPO, "tests", "fixtures", "tiny_dataset.yaml")
    for step in ("base2new_train", "base2new_test"):
        r = subprocess.run(["bash", str(script), step, dataset, "1"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    common = "tiny_dataset/shots_2/TinyNet/tiny_trainer/seed1"
    new = json.loads((tmp_path / "output/base2new/test_new" / common / "results.json").read_text())
    assert (new["subsample"], new["epoch"]) == ("new", 3)
    assert "model.pth.tar-3" in (tmp_path / "output/base2new/test_new" / common / "log.txt").read_text()
