"""Every script of the upstream ``scripts/`` trees that users copy commands from exists here
under the same path, is executable, takes the same positional arguments (fewer is a usage
error naming the script) and, in DRY_RUN mode, plans its runs without training.

The lists are upstream's trees (data, not fetched): KaiyangZhou/CoOp ``scripts/``,
muzairkhattak/multimodal-prompt-learning (MaPLe) ``scripts/``, muzairkhattak/PromptSRC
``scripts/``. htyao89/KgCoOp keeps ``base2new_train.sh``/``base2new_test.sh`` (DATASET WEIGHT)
at the top of its ``scripts/``; here they are ``scripts/kgcoop/``. BeierZhu/Prompt-align keeps
ProGrad's in ``ProGrad.public/scripts/``; here they are ``scripts/prograd/``. ZjjConan/
Multi-Modal-Adapter's ``scripts/mmadapter/`` run ``MultiModalAdapter`` (upstream's name of MMA).
"""
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(REPO, "scripts")

B2N = ("DATASET", "SEED")
REPRO = ("DATASET", "SEED", "WEIGHTSPATH")
COCOOP = {"cocoop/base2new_train.sh": B2N, "cocoop/base2new_test.sh": B2N,
          "cocoop/xd_train.sh": ("SEED",), "cocoop/xd_test.sh": B2N}
COOP = {"coop/main.sh": ("DATASET", "CFG", "CTP", "NCTX", "SHOTS", "CSC"),
        "coop/eval.sh": ("DATASET", "CFG")}
UPSTREAM = {
    "KaiyangZhou/CoOp": {**COOP, "coop/zeroshot.sh": ("DATASET", "CFG"), **COCOOP},
    "muzairkhattak/multimodal-prompt-learning": {
        **COOP, **COCOOP,
        "independent-vlp/base2new_train_ivlp.sh": B2N, "independent-vlp/base2new_test_ivlp.sh": B2N,
        "independent-vlp/xd_train_ivlp.sh": B2N, "independent-vlp/xd_test_ivlp.sh": B2N,
        "independent-vlp/reproduce_ivlp.sh": REPRO,
        "language-prompting/base2new_train_lp.sh": B2N,
        "language-prompting/base2new_test_lp.sh": B2N,
        "language-prompting/xd_train_lp.sh": B2N, "language-prompting/xd_test_lp.sh": B2N,
        "language-prompting/reproduce_lp.sh": REPRO,
        "maple/base2new_train_maple.sh": B2N, "maple/base2new_test_maple.sh": B2N,
        "maple/xd_train_maple.sh": B2N, "maple/xd_test_maple.sh": B2N,
        "maple/reproduce_maple.sh": REPRO, "maple/reproduce_maple_xd.sh": REPRO,
        "vpt/base2new_train_vpt.sh": B2N, "vpt/base2new_test_vpt.sh": B2N,
        "vpt/xd_train_vpt.sh": B2N, "vpt/xd_test_vpt.sh": B2N, "vpt/reproduce_vpt.sh": REPRO,
        "zsclip/zeroshot.sh": ("DATASET", "CFG"),
    },
    "muzairkhattak/PromptSRC": {
        **COOP, **COCOOP,
        "maple/xd_train_maple.sh": B2N, "maple/xd_test_maple.sh": B2N,
        "maple/reproduce_maple.sh": REPRO, "maple/reproduce_maple_xd.sh": REPRO,
        "independent-vlp/reproduce_ivlp.sh": REPRO,
        "promptsrc/base2new_train.sh": B2N, "promptsrc/base2new_test.sh": B2N,
        "promptsrc/xd_train.sh": B2N, "promptsrc/xd_test.sh": B2N,
        "promptsrc/few_shot.sh": ("DATASET", "SHOTS"),
        "promptsrc/reproduce_base2novel_setting.sh": REPRO,
        "promptsrc/reproduce_few_shot.sh": ("DATASET", "SHOTS", "WEIGHTSPATH"),
        "promptsrc/reproduce_xd.sh": REPRO,
        "maple/base2new_train_maple.sh": B2N, "maple/base2new_test_maple.sh": B2N,
        "independent-vlp/base2new_train_ivlp.sh": B2N,
        "independent-vlp/base2new_test_ivlp.sh": B2N,
        "zsclip/zeroshot.sh": ("DATASET", "CFG"),
    },
    "htyao89/KgCoOp": {"kgcoop/base2new_train.sh": ("DATASET", "WEIGHT"),
                       "kgcoop/base2new_test.sh": ("DATASET", "WEIGHT")},
    "BeierZhu/Prompt-align": {
        "prograd/base2new_train_prograd.sh": ("DATASET",),
        "prograd/base2new_test_prograd.sh": ("DATASET",),
        "prograd/base2new_train_main.sh": ("DATASET",), "prograd/base2new_test_main.sh": ("DATASET",),
        "prograd/prograd.sh": COOP["coop/main.sh"], "prograd/main.sh": COOP["coop/main.sh"],
        "prograd/eval.sh": ("DATASET", "CFG"), "prograd/zeroshot.sh": ("DATASET", "CFG"),
    },
    "ZjjConan/Multi-Modal-Adapter": {
        "mmadapter/base2new_train.sh": ("DATASET", "SEED", "CFG"),
        "mmadapter/base2new_test.sh": ("DATASET", "SEED", "CFG", "LOADEP"),
        "mmadapter/xd_train.sh": ("SEED", "CFG"),
        "mmadapter/xd_test.sh": ("DATASET", "SEED", "CFG", "LOADEP"),
    },
}
# a value for each argument name (CFG: a config name; dry runs only print its path)
VALUES = {"DATASET": "dtd", "SEED": "2", "WEIGHTSPATH": "weights", "CFG": "vit_b16",
          "CTP": "end", "NCTX": "16", "SHOTS": "4", "CSC": "False", "WEIGHT": "8.0",
          "LOADEP": "5"}
CASES = sorted({(path, args) for tree in UPSTREAM.values() for path, args in tree.items()})


def run(script, *args, cwd, **env):
    full = {k: v for k, v in os.environ.items()
            if k not in ("DATA", "CFG", "SHOTS", "OUTPUT", "SOURCE", "DRY_RUN", "SEEDS", "LOADEP",
                         "NCTX", "CSC", "CTP", "IMPORT")}
    full.update(env, PYTHON="python")
    return subprocess.run(["bash", os.path.join(SCRIPTS, script), *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=60)


def test_the_lists_are_upstreams():
    assert [len(tree) for tree in UPSTREAM.values()] == [7, 28, 24, 2, 8, 4]  # each tree's .sh
    assert len(CASES) == 51


@pytest.mark.parametrize("script, args", CASES, ids=[c[0] for c in CASES])
def test_upstream_script_exists_and_parses_its_arguments(script, args, tmp_path):
    path = os.path.join(SCRIPTS, script)
    assert os.path.isfile(path), f"scripts/{script} (upstream name) is missing"
    assert os.access(path, os.X_OK), f"scripts/{script} is not executable"
    short = run(script, *[VALUES[a] for a in args[:-1]], cwd=tmp_path)
    assert short.returncode == 2 and short.stdout == ""
    assert short.stderr.startswith(f"usage: DATA=/path/to/datasets bash {path} ")
    assert " ".join(args) in short.stderr.replace("[DATASET] SEED", "DATASET SEED")
    planned = run(script, *[VALUES[a] for a in args], cwd=tmp_path, DRY_RUN="1")
    assert planned.returncode == 0, planned.stderr
    assert "[dry-run] would write output/" in planned.stdout
    assert "[dry-run] $ python " in planned.stdout and "tools/train.py" in planned.stdout
    assert os.listdir(tmp_path) == []  # nothing trained, nothing written


@pytest.mark.parametrize("script, folder", [
    ("maple/base2new_train_maple.sh",
     "output/base2new/train_base/dtd/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx/seed2"),
    ("independent-vlp/xd_train_ivlp.sh",
     "output/dtd/IVLP/vit_b16_c2_ep5_batch4_2+2ctx_16shots/seed2"),
    ("language-prompting/base2new_test_lp.sh",
     "output/base2new/test_new/dtd/shots_16/IVLP/vit_b16_c2_ep5_batch4_4ctx_language_only/seed2"),
    ("vpt/xd_test_vpt.sh", "output/evaluation/VPT/vit_b16_c2_ep5_batch4_4_16shots/dtd/seed2"),
    ("zsclip/zeroshot.sh", "output/ZeroshotCLIP/vit_b16/dtd"),
    ("coop/zeroshot.sh", "output/ZeroshotCLIP/vit_b16/dtd"),
    ("kgcoop/base2new_train.sh",
     "output/base2new/train_base/dtd/shots_16_8.0/KgCoOp/vit_b16_ep100_ctxv1/seed1"),
    ("prograd/base2new_test_prograd.sh",
     "output/base2new/test_new/dtd/shots_4/ProGrad/rn50_ep100/seed1"),
    ("prograd/prograd.sh", "output/dtd/ProGrad/vit_b16_4shots/nctx16_cscFalse_ctpend/seed1"),
    ("mmadapter/base2new_test.sh", "output/base2new/test_new/dtd/shots_16/MultiModalAdapter/seed2"),
    ("mmadapter/xd_train.sh", "output/imagenet/MultiModalAdapter/vit_b16_16shots/seed2"),
])
def test_upstream_names_write_upstreams_folders(script, folder, tmp_path):
    """The folders are the DIR lines of the upstream scripts (output/ as the root)."""
    args = dict(CASES)[script]
    r = run(script, *[VALUES[a] for a in args], cwd=tmp_path, DRY_RUN="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith(f"[dry-run] would write {folder}")


def test_kgcoop_scripts_pass_the_weight_to_kgcoops_own_section(tmp_path):
    r = run("kgcoop/base2new_test.sh", "dtd", "8.0", cwd=tmp_path, DRY_RUN="1", SEEDS="1")
    command = r.stdout.splitlines()[1]
    assert command.endswith("TRAINER.KGCOOP.N_CTX 4 TRAINER.KGCOOP.CSC False TRAINER.KGCOOP.W 8.0 "
                            "TRAINER.KGCOOP.CLASS_TOKEN_POSITION end DATASET.NUM_SHOTS 16 "
                            "DATASET.SUBSAMPLE_CLASSES new")
    assert "--model-dir output/base2new/train_base/dtd/shots_16_8.0/KgCoOp/" in command


def test_prograd_and_mma_scripts_pass_upstreams_settings(tmp_path):
    r = run("prograd/base2new_train_prograd.sh", "dtd", cwd=tmp_path, DRY_RUN="1", SEEDS="1")
    assert r.stdout.splitlines()[1].endswith(
        "--trainer ProGrad --config-file " + os.path.join(REPO, "configs/trainers/ProGrad/rn50_ep100.yaml")
        + " --seed 1 --dataset-config-file " + os.path.join(REPO, "configs/datasets/dtd.yaml")
        + " --output-dir output/base2new/train_base/dtd/shots_4/ProGrad/rn50_ep100/seed1 "
        "LOSS.LAMBDA 1.0 TRAINER.COOP.N_CTX 16 TRAINER.COOP.CSC False "
        "TRAINER.COOP.CLASS_TOKEN_POSITION end DATASET.NUM_SHOTS 4 DATASET.SUBSAMPLE_CLASSES base")
    main = run("prograd/base2new_train_main.sh", "dtd", cwd=tmp_path, DRY_RUN="1", SEEDS="1")
    assert "--trainer CoOp " in main.stdout and "LOSS.LAMBDA" not in main.stdout
    # MMA's upstream config names resolve to configs/trainers/MMA/; LOADEP is the epoch evaluated
    train = tmp_path / "output/base2new/train_base/dtd/shots_16/MultiModalAdapter/seed2"
    train.mkdir(parents=True)
    (train / "results.json").write_text('{"epoch": 5}')
    env = {k: v for k, v in os.environ.items() if k not in ("DRY_RUN", "LOADEP", "OUTPUT")}
    env.update(DATA="data", PYTHON="echo")
    r = subprocess.run(["bash", os.path.join(SCRIPTS, "mmadapter/base2new_test.sh"), "dtd", "2",
                        "vit_b16_ep5", "3"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    command = r.stdout.splitlines()[-1]
    assert "--trainer MultiModalAdapter --config-file " + os.path.join(
        REPO, "configs/trainers/MMA/vit_b16_ep5.yaml") in command
    assert f"--model-dir output/base2new/train_base/dtd/shots_16/MultiModalAdapter/seed2 " \
           f"--load-epoch 3 --eval-only" in command
