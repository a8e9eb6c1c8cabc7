"""The text-prompt trainers through ``tools/train.py``, as users run them (subprocesses)."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(REPO, "tests", "fixtures")


def train_py(root, clip_path, out, trainer, *extra):
    prec = "TRAINER.COCOOP.PREC" if trainer == "CoCoOp" else "TRAINER.COOP.PREC"
    cmd = [sys.executable, os.path.join(REPO, "tools", "train.py"),
           "--import", os.path.join(FIX, "tiny_world.py"), "--trainer", trainer,
           "--root", root, "--output-dir", str(out), "--seed", "1",
           "--dataset-config-file", os.path.join(FIX, "tiny_dataset.yaml"), *extra,
           "INPUT.SIZE", "(32, 32)", "MODEL.BACKBONE.NAME", clip_path, prec, "fp32",
           "OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "0"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def read_results(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def test_coop_train_then_eval_only(tiny_root, tiny_clip_path, tmp_path):
    run = tmp_path / "run"
    r = train_py(tiny_root, tiny_clip_path, run, "CoOp", "TRAINER.COOP.N_CTX", "4")
    assert r.returncode == 0, r.stderr[-3000:]
    log = (run / "log.txt").read_text()
    assert "Parameters to be updated (128 values): ['ctx']" in log and "* accuracy: " in log
    trained = read_results(run)
    ev = tmp_path / "eval"
    r = train_py(tiny_root, tiny_clip_path, ev, "CoOp", "--eval-only", "--model-dir", str(run),
                 "--load-epoch", "1", "TRAINER.COOP.N_CTX", "4")
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_results(ev)["accuracy"] == trained["accuracy"]


def test_eval_only_from_upstream_coop_checkpoint(tiny_root, tiny_clip_path, tmp_path, upstream):
    model_dir = upstream.write(tmp_path / "upstream", upstream.coop_state(n_ctx=16))
    out = tmp_path / "eval"
    r = train_py(tiny_root, tiny_clip_path, out, "CoOp", "--eval-only", "--model-dir", model_dir,
                 "--load-epoch", "50")
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_results(out)["epoch"] == 50
    assert "Ignoring fixed token embeddings ['token_prefix', 'token_suffix']" in (
        out / "log.txt").read_text()
    bad = train_py(tiny_root, tiny_clip_path, tmp_path / "bad", "CoOp", "--eval-only",
                   "--model-dir", model_dir, "--load-epoch", "50", "TRAINER.COOP.N_CTX", "4")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "'ctx' has shape (16, 32) but the model expects (4, 32)" in bad.stderr


def test_zeroshot_eval_only_needs_no_model_dir(tiny_root, tiny_clip_path, tmp_path):
    out = tmp_path / "zs"
    r = train_py(tiny_root, tiny_clip_path, out, "ZeroshotCLIP", "--eval-only")
    assert r.returncode == 0, r.stderr[-3000:]
    res = read_results(out)
    assert res["trainer"] == "ZeroshotCLIP" and res["num_samples"] == 16
    assert "No prompt template for dataset 'TinyColors'; using 'a photo of a {}.'" in (
        out / "log.txt").read_text()


def test_eval_only_from_upstream_coop_checkpoint_with_word_init(tiny_root, tiny_clip_path,
                                                                 tmp_path, upstream):
    """An upstream CoOp run with CTX_INIT "itap of a" learned 3 vectors (one per word)."""
    model_dir = upstream.write(tmp_path / "upstream", upstream.coop_state(n_ctx=3))
    out = tmp_path / "eval"
    r = train_py(tiny_root, tiny_clip_path, out, "CoOp", "--eval-only", "--model-dir", model_dir,
                 "--load-epoch", "50", "TRAINER.COOP.CTX_INIT", "itap of a")
    assert r.returncode == 0, r.stderr[-3000:]
    results = read_results(out)
    assert results["epoch"] == 50 and results["num_samples"] == 16
    assert "tokens ['a'] stay fixed in the prompt" in (out / "log.txt").read_text()
