"""Ctrl-C (SIGINT from the test) stops training at a safe point, exits 130, prints the resume
command; running that command finishes bit-identical to an uninterrupted run."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

from .conftest import FIX, REPO

HERE = os.path.dirname(os.path.abspath(__file__))


def argv(root, out):
    return [sys.executable, os.path.join(REPO, "tools", "train.py"),
            "--import", os.path.join(FIX, "tiny_world.py"),
            "--import", os.path.join(HERE, "slow_tiny_world.py"),
            "--trainer", "SlowTinyNet", "--root", root, "--output-dir", str(out), "--seed", "1",
            "--dataset-config-file", os.path.join(FIX, "tiny_dataset.yaml"),
            "--config-file", os.path.join(FIX, "tiny_trainer.yaml"),
            "OPTIM.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FREQ", "1"]


def start(cmd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path, text, proc, timeout=240):
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if os.path.isfile(path) and text in open(path).read():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path} (exit status {proc.poll()})")


@pytest.mark.slow
def test_ctrl_c_exits_130_and_the_resume_command_finishes_bit_identical(tmp_path, tiny_root):
    full, cut = tmp_path / "full", tmp_path / "cut"
    reference = start(argv(tiny_root, full))
    proc = start(argv(tiny_root, cut))
    wait_for(cut / "log.txt", "epoch [2/3] batch [2/6]", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "Interrupted (Ctrl-C) at epoch 2/3, batch " in err
    kept = os.path.join(str(cut), "model", "model.pth.tar-1")
    assert f"The last checkpoint is kept: {kept}." in err
    assert sorted(os.listdir(cut / "model")) == ["checkpoint", "model.pth.tar-1"]
    command = err.split("To resume, run:\n", 1)[1].strip().splitlines()[0].strip()
    words = shlex.split(command)
    assert words[0] in ("python", sys.executable)  # this interpreter
    assert words[1:4] == ["tools/train.py", "--resume", str(cut)]
    assert words[4:] == argv(tiny_root, cut)[2:]  # then the interrupted command's arguments

    resumed = start([sys.executable, *words[1:]])
    out, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err[-3000:]
    assert reference.wait(timeout=240) == 0, reference.stderr.read()[-3000:]
    assert "Resuming 'model' from" in out and "(epoch 1)" in out
    mine = torch.load(cut / "model" / "model.pth.tar-3", weights_only=True)
    ref = torch.load(full / "model" / "model.pth.tar-3", weights_only=True)
    for key, value in ref["state_dict"].items():
        assert torch.equal(mine["state_dict"][key], value), key
    a = json.loads((cut / "results.json").read_text())
    b = json.loads((full / "results.json").read_text())
    assert (a["accuracy"], a["macro_f1"], a["epoch"]) == (b["accuracy"], b["macro_f1"], 3)
