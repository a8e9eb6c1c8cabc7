"""Upstream argument orders of scripts/ (CoOp main.sh / eval.sh, MaPLe and PromptSRC base2new_*,
xd_*, few_shot, reproduce_*): in DRY_RUN mode each prints the folders it would write, which
must be upstream's (the DIR lines of the upstream scripts, with output/ as the root)."""
import os
import re
import stat
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(REPO, "scripts")
SCRIPT_ENV = ("DATA", "CFG", "SHOTS", "OUTPUT", "SOURCE", "PYTHON", "IMPORT", "DRY_RUN", "SEEDS",
              "LOADEP", "NCTX", "CSC", "CTP")
MAPLE_B2N = "vit_b16_c2_ep5_batch4_2ctx"
MAPLE_XD = "vit_b16_c2_ep5_batch4_2ctx_cross_datasets"
PSRC_B2N = "vit_b16_c2_ep20_batch4_4+4ctx"
PSRC_XD = "vit_b16_c2_ep5_batch4_4+4ctx_cross_datasets"
PSRC_FS = "vit_b16_c2_ep50_batch4_4+4ctx_few_shot"


def run_script(script, *args, cwd, **env):
    full = {k: v for k, v in os.environ.items() if k not in SCRIPT_ENV}
    full.update(env)
    return subprocess.run(["bash", os.path.join(SCRIPTS, script), *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=60)


def would_write(stdout):
    return re.findall(r"^\[dry-run\] would write (\S+)", stdout, flags=re.M)


# (script, args, the folders upstream's script writes for these args)
CASES = [
    ("coop/main.sh", ["oxford_pets", "rn50_ep50", "end", "16", "1", "False"],
     [f"output/oxford_pets/CoOp/rn50_ep50_1shots/nctx16_cscFalse_ctpend/seed{s}" for s in (1, 2, 3)]),
    ("coop/main.sh", ["dtd", "vit_b16", "middle", "4", "8", "True"],
     [f"output/dtd/CoOp/vit_b16_8shots/nctx4_cscTrue_ctpmiddle/seed{s}" for s in (1, 2, 3)]),
    ("coop/eval.sh", ["caltech101", "rn50_ep50"],
     [f"output/evaluation/CoOp/rn50_ep50_16shots/nctx16_cscFalse_ctpend/caltech101/seed{s}"
      for s in (1, 2, 3)]),
    ("maple/base2new_train.sh", ["eurosat", "2"],
     [f"output/base2new/train_base/eurosat/shots_16/MaPLe/{MAPLE_B2N}/seed2"]),
    ("maple/base2new_test.sh", ["eurosat", "2"],
     [f"output/base2new/test_new/eurosat/shots_16/MaPLe/{MAPLE_B2N}/seed2"]),
    ("maple/xd_train.sh", ["imagenet", "1"], [f"output/imagenet/MaPLe/{MAPLE_XD}_16shots/seed1"]),
    ("maple/xd_test.sh", ["dtd", "1"], [f"output/evaluation/MaPLe/{MAPLE_XD}_16shots/dtd/seed1"]),
    ("maple/few_shot.sh", ["dtd", "4"], [f"output/dtd/MaPLe/{MAPLE_B2N}_4shots/seed{s}"
                                         for s in (1, 2, 3)]),
    ("maple/reproduce_maple.sh", ["dtd", "3", "weights/maple"],
     [f"output/base2new/test_{sub}/dtd/shots_16/MaPLe/{MAPLE_B2N}/seed3" for sub in ("base", "new")]),
    ("maple/reproduce_maple_xd.sh", ["ucf101", "1", "weights/maple_xd"],
     [f"output/evaluation/MaPLe/{MAPLE_XD}_16shots/ucf101/seed1"]),
    ("promptsrc/base2new_train.sh", ["dtd", "1"],
     [f"output/base2new/train_base/dtd/shots_16/PromptSRC/{PSRC_B2N}/seed1"]),
    ("promptsrc/base2new_test.sh", ["dtd", "1"],
     [f"output/base2new/test_new/dtd/shots_16/PromptSRC/{PSRC_B2N}/seed1"]),
    ("promptsrc/xd_train.sh", ["imagenet", "3"], [f"output/imagenet/PromptSRC/{PSRC_XD}_16shots/seed3"]),
    ("promptsrc/xd_test.sh", ["sun397", "3"], [f"output/evaluation/PromptSRC/{PSRC_XD}_16shots/sun397/seed3"]),
    ("promptsrc/few_shot.sh", ["food101", "2"], [f"output/food101/PromptSRC/{PSRC_FS}_2shots/seed{s}"
                                                 for s in (1, 2, 3)]),
    ("promptsrc/reproduce_base2novel_setting.sh", ["dtd", "1", "w"],
     [f"output/base2new/test_{sub}/dtd/shots_16/PromptSRC/{PSRC_B2N}/seed1" for sub in ("base", "new")]),
    ("promptsrc/reproduce_few_shot.sh", ["dtd", "16", "w"],
     [f"output/few_shot/dtd/PromptSRC/{PSRC_FS}_16shots/seed{s}" for s in (1, 2, 3)]),
    ("promptsrc/reproduce_xd.sh", ["dtd", "2", "w"],
     [f"output/evaluation/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets_16shots/dtd/seed2"]),
]


@pytest.mark.parametrize("script, args, expected", CASES, ids=[" ".join([c[0], *c[1]]) for c in CASES])
def test_dry_run_prints_upstreams_folders(script, args, expected, tmp_path):
    r = run_script(script, *args, cwd=tmp_path, DRY_RUN="1")
    assert r.returncode == 0, r.stderr
    assert would_write(r.stdout) == expected
    assert os.listdir(tmp_path) == []  # nothing written, nothing run


def test_coop_main_passes_the_coop_keys(tmp_path):
    r = run_script("coop/main.sh", "dtd", "vit_b16", "middle", "4", "8", "True", cwd=tmp_path,
                   DRY_RUN="1", SEEDS="5", DATA="/data")
    commands = [ln for ln in r.stdout.splitlines() if ln.startswith("[dry-run] $ ")]
    assert len(commands) == 1
    assert commands[0].endswith(
        "--seed 5 --dataset-config-file {0}/configs/datasets/dtd.yaml --output-dir "
        "output/dtd/CoOp/vit_b16_8shots/nctx4_cscTrue_ctpmiddle/seed5 TRAINER.COOP.N_CTX 4 "
        "TRAINER.COOP.CSC True TRAINER.COOP.CLASS_TOKEN_POSITION middle DATASET.NUM_SHOTS 8"
        .format(REPO))
    assert f"--config-file {REPO}/configs/trainers/CoOp/vit_b16.yaml" in commands[0]


def test_xd_train_seed_only_order_still_works(tmp_path):
    r = run_script("cocoop/xd_train.sh", "2", cwd=tmp_path, DRY_RUN="1")
    assert would_write(r.stdout) == [
        "output/imagenet/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1_16shots/seed2"]
    r = run_script("maple/xd_train.sh", "imagenet", cwd=tmp_path, DRY_RUN="1")
    assert r.returncode == 2 and "[DATASET] SEED" in r.stderr


FAKE_PYTHON = """#!{python}
import os, sys
with open(os.environ["CALLS"], "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
"""


def test_reproduce_loads_the_newest_released_epoch(tmp_path):
    """A released MaPLe folder (WEIGHTSPATH/base/seed1/MultiModalPromptLearner/model.pth.tar-N):
    both evaluations load the newest N; LOADEP overrides it; a missing folder is an error."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    learner = tmp_path / "released" / "base" / "seed1" / "MultiModalPromptLearner"
    learner.mkdir(parents=True)
    for n in (2, 5):
        (learner / f"model.pth.tar-{n}").write_bytes(b"")
    env = dict(PYTHON=str(fake), CALLS=str(calls), DATA="/data")
    r = run_script("maple/reproduce_maple.sh", "dtd", "1", "released", cwd=tmp_path, **env)
    assert r.returncode == 0, r.stderr
    lines = calls.read_text().splitlines()
    assert len(lines) == 2
    for line, sub in zip(lines, ("base", "new")):
        assert "--model-dir released/base/seed1 --load-epoch 5 --eval-only" in line
        assert line.endswith(f"DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES {sub}")
    calls.unlink()
    run_script("maple/reproduce_maple_xd.sh", "dtd", "1", "released/base", cwd=tmp_path,
               LOADEP="2", **env)
    assert "--model-dir released/base/seed1 --load-epoch 2 --eval-only" in calls.read_text()
    r = run_script("maple/reproduce_maple.sh", "dtd", "2", "released", cwd=tmp_path, **env)
    assert r.returncode == 1
    assert r.stderr == "error: no released checkpoint folder released/base/seed2\n"
