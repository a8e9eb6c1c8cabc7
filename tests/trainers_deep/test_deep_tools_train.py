"""MaPLe through ``tools/train.py`` as users run it (subprocesses): train, then --eval-only from
the run directory and from an upstream-layout checkpoint directory."""
import json
import os
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(REPO, "tests", "fixtures")


def train_py(root, clip_path, out, *extra):
    cmd = [sys.executable, os.path.join(REPO, "tools", "train.py"),
           "--import", os.path.join(FIX, "tiny_world.py"), "--trainer", "MaPLe",
           "--root", root, "--output-dir", str(out), "--seed", "1",
           "--dataset-config-file", os.path.join(FIX, "tiny_dataset.yaml"),
           "--config-file", os.path.join(REPO, "configs", "trainers", "MaPLe",
                                         "vit_b16_c2_ep5_batch4_2ctx.yaml"), *extra,
           "INPUT.SIZE", "(32, 32)", "MODEL.BACKBONE.NAME", clip_path, "TRAINER.MAPLE.PREC",
           "fp32", "TRAINER.MAPLE.PROMPT_DEPTH", "3", "OPTIM.MAX_EPOCH", "1",
           "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "8"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def read_results(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def test_maple_train_eval_only_and_upstream_directory(tiny_root, deep_clip_path, tmp_path,
                                                      upstream):
    run = tmp_path / "run"
    r = train_py(tiny_root, deep_clip_path, run)
    assert r.returncode == 0, r.stderr[-3000:]
    log = (run / "log.txt").read_text()
    # 2*32 + (32*48 + 48) + 2*2*32 + 2*(32*48 + 48) learned values, in upstream's folder
    assert "Parameters to be updated (4,944 values)" in log and "* accuracy: " in log
    ckpt_path = run / "MultiModalPromptLearner" / "model.pth.tar-1"
    trained = read_results(run)

    ev = tmp_path / "eval"
    r = train_py(tiny_root, deep_clip_path, ev, "--eval-only", "--model-dir", str(run),
                 "--load-epoch", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_results(ev)["accuracy"] == trained["accuracy"]

    # the same weights in upstream's layout (prefixed, numbered compound prompts, frozen keys)
    ours = torch.load(ckpt_path, weights_only=False)["state_dict"]
    state = {f"prompt_learner.{k}": v for k, v in ours.items() if k != "compound_prompts_text"}
    for i, p in enumerate(ours["compound_prompts_text"]):
        state[f"prompt_learner.compound_prompts_text.{i}"] = p.clone()
    from dassl_lite.clip import build_model
    state.update(upstream.frozen(build_model(torch.load(deep_clip_path, weights_only=True))))
    model_dir = upstream.write(tmp_path / "upstream", "MultiModalPromptLearner", state, epoch=1)
    up = tmp_path / "eval_upstream"
    r = train_py(tiny_root, deep_clip_path, up, "--eval-only", "--model-dir", model_dir,
                 "--load-epoch", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_results(up)["accuracy"] == trained["accuracy"]
    assert "Upstream checkpoint layout" in (up / "log.txt").read_text()
