"""Nothing the user has is destroyed, and no run trains without writing results (issue 26):

* ``tools/anomaly_heatmap.py`` refuses an ``--output`` that is, or contains, its ``--input``;
* ``tools/cache.py clear`` deletes only the cache's own buckets, and refuses (deleting nothing)
  a folder that holds anything else;
* ``tools/export_checkpoint.py`` refuses an ``--out`` that is a run's folder, and leaves no
  temporary folder behind;
* stale or malformed launch variables (``RANK=1`` alone, ``WORLD_SIZE=two``, a process group
  whose other ranks never come) stop the run with a message naming them, within seconds;
* a run killed between saving ``model.pth.tar-N`` and updating its ``checkpoint`` pointer
  resumes from epoch N, not from the start.

Each case checks the files on disk (unchanged, or the expected results) and the message.
"""
import hashlib
import importlib.util
import os
import shutil
import socket
import time

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import REPO, run_main, tiny_argv


def _tool(name):
    spec = importlib.util.spec_from_file_location(f"{name}_tool_h26", os.path.join(REPO, "tools",
                                                                                  f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _snapshot(folder):
    """{relative path: sha256} of every file under ``folder`` (folders as None)."""
    out = {}
    for d, dirs, files in os.walk(folder):
        for name in dirs:
            out[os.path.relpath(os.path.join(d, name), folder)] = None
        for name in files:
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


# ------------------------------------------------------------------ anomaly heatmaps
def _images(folder):
    folder.mkdir(parents=True)
    for i, name in enumerate(("a.png", "b.png")):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / name)
    return folder


@pytest.mark.parametrize("case", ["same_folder", "file_in_output", "output_above_input",
                                  "output_is_the_file"])
def test_heatmap_output_that_would_overwrite_inputs_is_refused(case, tmp_path, capsys):
    images = _images(tmp_path / "photos" / "set1")
    given, output, words = {
        "same_folder": (images, images, f"--output {images} is the input folder"),
        "file_in_output": (images / "a.png", images,
                           f"--output {images} contains the input {images / 'a.png'}"),
        "output_above_input": (images, tmp_path / "photos",
                               f"--output {tmp_path / 'photos'} contains the input {images}"),
        "output_is_the_file": (images / "a.png", images / "a.png",
                               f"--output {images / 'a.png'} is the input image"),
    }[case]
    before = _snapshot(tmp_path)
    code = _tool("anomaly_heatmap").main(["--trainer", "ZeroshotAD", "--config-file", "toy",
                                          "--input", str(given), "--output", str(output)])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "would overwrite input images" in err, err
    assert "Nothing written" in err and "--output " + str(images / "heatmaps") in err
    assert _snapshot(tmp_path) == before  # no overlay, log.txt or scores.txt


def test_heatmap_output_inside_the_input_folder_is_allowed():
    tool = _tool("anomaly_heatmap")
    tool.check_output("photos", os.path.join("photos", "heatmaps"))  # no error
    tool.check_output(os.path.join("photos", "a.png"), "heatmaps")


@pytest.mark.parametrize("kind", ["config", "checkpoint"])
def test_heatmap_output_that_is_a_run_folder_is_refused(kind, tmp_path, capsys):
    images = _images(tmp_path / "photos")
    run = tmp_path / "eval_run"
    if kind == "config":  # an evaluation run: its scores.txt and log.txt would be replaced
        run.mkdir()
        (run / "config.yaml").write_text("OUTPUT_DIR: x\n")
        (run / "scores.txt").write_text("0.9 a.png anomalous\n")
        evidence = f"it holds {run / 'config.yaml'}"
    else:  # a training run's model folder without its config.yaml
        (run / "model").mkdir(parents=True)
        torch.save({"state_dict": {}, "optimizer": {"lr": 1}}, run / "model" / "model.pth.tar-2")
        evidence = f"it holds {run / 'model' / 'model.pth.tar-2'}, a checkpoint without its pointer"
    before = _snapshot(tmp_path)
    code = _tool("anomaly_heatmap").main(["--trainer", "ZeroshotAD", "--config-file", "toy",
                                          "--input", str(images), "--output", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and f"--output {run} is a run's folder ({evidence})" in err, err
    assert "Nothing written" in err and f"--output {run / 'heatmaps'}" in err
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------ feature cache
def _bucket(root, transform="T"):
    from dassl_lite.data.feature_cache import FeatureCache

    FeatureCache(str(root)).bucket("e" * 64, "fp16", transform).write(["k"], torch.ones(1, 4))


def test_cache_clear_refuses_a_folder_with_user_files_and_deletes_nothing(tmp_path, capsys):
    from dassl_lite.data.cache_admin import main

    root = tmp_path / "mixed"
    (root / "my_photos").mkdir(parents=True)
    (root / "my_photos" / "cat.jpg").write_bytes(b"cat")
    (root / "notes.txt").write_text("keep me")
    _bucket(root)
    before = _snapshot(root)
    assert main(["clear", "--dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"error: {root} is not (only) a feature cache: it holds my_photos/, notes.txt" in err
    assert "Nothing deleted" in err
    assert _snapshot(root) == before  # the user's files and the bucket alike


def test_cache_clear_refuses_a_bucket_holding_a_foreign_file(tmp_path, capsys):
    from dassl_lite.data.cache_admin import main

    _bucket(tmp_path)
    bucket = next(p for p in tmp_path.iterdir())
    (bucket / "mine.txt").write_text("x")
    before = _snapshot(tmp_path)
    assert main(["clear", "--dir", str(tmp_path)]) == 2
    assert f"it holds {bucket.name}/mine.txt" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


def test_cache_clear_deletes_its_own_buckets(tmp_path, capsys):
    from dassl_lite.data.cache_admin import main

    _bucket(tmp_path, "T1")
    _bucket(tmp_path, "T2")
    assert len(os.listdir(tmp_path)) == 2
    assert main(["clear", "--dir", str(tmp_path)]) == 0
    assert f"Cleared {tmp_path}: 2 bucket(s)" in capsys.readouterr().out
    assert os.listdir(tmp_path) == []
    assert main(["clear", "--dir", str(tmp_path / "absent")]) == 0
    assert "Nothing to clear" in capsys.readouterr().out


# ------------------------------------------------------------------ export
def _fake_run(run, optimizer=True, config=True):
    (run / "prompt_learner").mkdir(parents=True)
    torch.save({"state_dict": {"ctx": torch.ones(2, 4)}, "epoch": 2,
                "optimizer": {"state": {}} if optimizer else None},
               run / "prompt_learner" / "model.pth.tar-2")
    (run / "prompt_learner" / "checkpoint").write_text("model.pth.tar-2\n")
    if config:
        (run / "config.yaml").write_text("TRAINER:\n  NAME: CoOp\n")
    return run


@pytest.mark.parametrize("case", ["itself", "another_run", "checkpoints_without_config",
                                  "epoch_file_without_pointer"])
def test_export_into_a_run_folder_is_refused(case, tmp_path, capsys):
    run = _fake_run(tmp_path / "run")
    other = tmp_path / "other"
    if case == "another_run":
        _fake_run(other)
        words = f"it holds {other / 'config.yaml'}"
    elif case == "checkpoints_without_config":
        _fake_run(other, config=False)
        words = f"it holds the training checkpoint {other / 'prompt_learner' / 'model.pth.tar-2'}"
    elif case == "epoch_file_without_pointer":
        _fake_run(other, config=False)
        os.remove(other / "prompt_learner" / "checkpoint")
        words = (f"it holds {other / 'prompt_learner' / 'model.pth.tar-2'}, a checkpoint "
                 f"without its pointer")
    else:
        other, words = run, "it is the run being exported"
    before = _snapshot(tmp_path)
    assert _tool("export_checkpoint").main([str(run), "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"error: --out {other} is a run's folder ({words})" in err, err
    assert "could no longer resume" in err
    assert _snapshot(tmp_path) == before


def test_export_into_an_earlier_export_is_allowed_and_failures_leave_no_temp_folder(
        tmp_path, capsys, monkeypatch):
    tool = _tool("export_checkpoint")
    exported = _fake_run(tmp_path / "exported", optimizer=False, config=False)
    tool.check_out_dir(str(exported), str(tmp_path / "run"))  # an export: no error
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("TRAINER:\n  NAME: CoOp\nDATASET:\n  NAME: NoSuchSet\n")
    code = tool.main([str(run), "--out", str(tmp_path / "new")])  # fails building the trainer
    assert code == 2 and "NoSuchSet" in capsys.readouterr().err
    assert not [n for n in os.listdir(temp) if n.startswith("dassl_lite_export_")]
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------ launch variables
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
               "DASSL_LITE_DIST_TIMEOUT")


@pytest.fixture
def launch_env(monkeypatch):
    for k in LAUNCH_VARS:
        monkeypatch.delenv(k, raising=False)

    def _set(**env):
        for k, v in env.items():
            monkeypatch.setenv(k, str(v))
    return _set


@pytest.mark.parametrize("env, words", [
    ({"RANK": 1}, "Stale launch variables: RANK=1 but WORLD_SIZE is not set"),
    ({"RANK": 3, "LOCAL_RANK": 3, "WORLD_SIZE": 1},
     "Stale launch variables: RANK=3 LOCAL_RANK=3 but WORLD_SIZE=1"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two': expected the number of processes, an integer >= 1"),
    ({"RANK": "first"}, "RANK='first': expected this process's rank, an integer >= 0"),
    ({"WORLD_SIZE": 2, "RANK": 2, "LOCAL_RANK": 0, "MASTER_ADDR": "127.0.0.1",
      "MASTER_PORT": 1}, "RANK=2 is not below WORLD_SIZE=2"),
])
def test_stale_or_malformed_launch_variables_stop_before_training(env, words, launch_env,
                                                                   tiny_root, tmp_path):
    launch_env(**env)
    r = run_main(tiny_argv(tiny_root, tmp_path / "out"))
    assert r.code == 2 and r.err.startswith("error: ") and words in r.err, r.err
    assert not (tmp_path / "out").exists()  # nothing trained, nothing half-written


def test_plain_run_writes_results_once_the_stale_rank_is_gone(launch_env, tiny_root, tmp_path):
    launch_env(RANK=0, WORLD_SIZE=1, LOCAL_RANK=0)  # what torchrun --nproc_per_node 1 sets
    r = run_main(tiny_argv(tiny_root, tmp_path / "out", "OPTIM.MAX_EPOCH", "1"))
    assert r.code == 0, r.err
    assert (tmp_path / "out" / "results.json").is_file()
    assert (tmp_path / "out" / "model" / "model.pth.tar-1").is_file()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("rank, words", [
    (0, "rank(s) 1, 2 did not join within 2 s ($DASSL_LITE_DIST_TIMEOUT)"),
    (1, "rank 0 (the master) did not answer at MASTER_ADDR=127.0.0.1"),
])
def test_a_process_group_that_never_forms_fails_in_seconds_naming_the_ranks(
        rank, words, launch_env, tiny_root, tmp_path):
    port = _free_port()
    launch_env(WORLD_SIZE=3, RANK=rank, LOCAL_RANK=rank, MASTER_ADDR="127.0.0.1",
               MASTER_PORT=port, DASSL_LITE_DIST_TIMEOUT=2)
    start = time.monotonic()
    r = run_main(tiny_argv(tiny_root, tmp_path / "out"))
    took = time.monotonic() - start
    assert r.code == 2 and words in r.err, r.err
    assert "Unset RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT" in r.err
    assert took < 20, took
    assert not (tmp_path / "out").exists()  # the group is joined before any file is written


def test_a_malformed_join_timeout_is_named(launch_env, tiny_root, tmp_path):
    launch_env(WORLD_SIZE=2, RANK=0, LOCAL_RANK=0, MASTER_ADDR="127.0.0.1",
               MASTER_PORT=_free_port(), DASSL_LITE_DIST_TIMEOUT="soon")
    r = run_main(tiny_argv(tiny_root, tmp_path / "out"))
    assert r.code == 2 and "DASSL_LITE_DIST_TIMEOUT='soon': expected a number of seconds" in r.err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ resume after a kill
def _trained(tiny_root, run, epochs=3):
    """A finished run with a checkpoint every epoch; returns its final weights."""
    r = run_main(tiny_argv(tiny_root, run, "OPTIM.MAX_EPOCH", str(epochs),
                           "TRAIN.CHECKPOINT_FREQ", "1"))
    assert r.code == 0, r.err
    return torch.load(run / "model" / f"model.pth.tar-{epochs}", weights_only=True)["state_dict"]


def _kill_after_saving(run, epoch, pointer):
    """The run as a kill after saving ``model.pth.tar-<epoch>`` leaves it: later epochs and the
    results gone, the pointer still naming ``pointer`` (None: not written yet)."""
    model = run / "model"
    for name in os.listdir(model):
        if name.startswith("model.pth.tar-") and int(name.rsplit("-", 1)[1]) > epoch:
            os.remove(model / name)
    os.remove(run / "results.json")
    if pointer is None:
        os.remove(model / "checkpoint")
    else:
        (model / "checkpoint").write_text(f"model.pth.tar-{pointer}\n")


@pytest.mark.parametrize("saved, pointer", [(2, 1), (1, None)])
def test_resume_after_a_kill_before_the_pointer_continues_from_the_saved_epoch(
        saved, pointer, tiny_root, tmp_path):
    run = tmp_path / "run"
    final = _trained(tiny_root, run)
    _kill_after_saving(run, saved, pointer)
    r = run_main(tiny_argv(tiny_root, run, "OPTIM.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FREQ", "1"))
    assert r.code == 0, r.err
    newest = run / "model" / f"model.pth.tar-{saved}"
    said = (f"{run / 'model' / 'checkpoint'} names model.pth.tar-{pointer}" if pointer
            else f"{run / 'model'} has no checkpoint pointer")
    assert (f"{said}, but model.pth.tar-{saved} is newer and loads (a run stopped between "
            f"saving it and updating the pointer): resuming from {newest}") in r.out
    assert f"Resumed from {run} at epoch {saved}" in r.out
    assert f"epoch [1/3]" not in r.out  # not retrained from the start
    assert (run / "results.json").is_file()
    resumed = torch.load(run / "model" / "model.pth.tar-3", weights_only=True)["state_dict"]
    assert all(torch.equal(resumed[k], final[k]) for k in final)  # same as never interrupted


def test_resume_skips_a_newer_epoch_file_that_does_not_load(tiny_root, tmp_path):
    run = tmp_path / "run"
    final = _trained(tiny_root, run)
    _kill_after_saving(run, 2, 1)
    broken = run / "model" / "model.pth.tar-2"
    broken.write_bytes(broken.read_bytes()[:100])  # not written atomically by us: damaged
    r = run_main(tiny_argv(tiny_root, run, "OPTIM.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FREQ", "1"))
    assert r.code == 0, r.err
    assert f"Skipping {broken} on resume" in r.out
    assert f"Resumed from {run} at epoch 1" in r.out
    resumed = torch.load(run / "model" / "model.pth.tar-3", weights_only=True)["state_dict"]
    assert all(torch.equal(resumed[k], final[k]) for k in final)


def test_resume_refuses_when_no_epoch_file_loads_and_there_is_no_pointer(tiny_root, tmp_path):
    run = tmp_path / "run"
    _trained(tiny_root, run)
    _kill_after_saving(run, 1, None)
    broken = run / "model" / "model.pth.tar-1"
    broken.write_bytes(b"not a checkpoint")
    before = _snapshot(run / "model")
    r = run_main(tiny_argv(tiny_root, run, "OPTIM.MAX_EPOCH", "3"))
    assert r.code == 2, r.err
    assert (f"Cannot resume from {run / 'model'}: it has no checkpoint pointer and none of its "
            f"epoch files loads (model.pth.tar-1)") in r.err
    assert _snapshot(run / "model") == before and not (run / "results.json").exists()
    shutil.rmtree(run)


def test_models_killed_at_different_epochs_resume_together_from_the_older(tmp_path, caplog):
    from dassl_lite.engine.base import TrainerBase
    from dassl_lite.engine.checkpoint import CheckpointError

    for name, epochs in (("a", (1, 2)), ("b", (1,))):
        (tmp_path / name).mkdir()
        for e in epochs:
            (tmp_path / name / f"model.pth.tar-{e}").write_bytes(b"x")
    found = {"a": str(tmp_path / "a" / "model.pth.tar-2"),
             "b": str(tmp_path / "b" / "model.pth.tar-1")}
    common = TrainerBase._common_epoch(str(tmp_path), found)
    assert common == {n: str(tmp_path / n / "model.pth.tar-1") for n in "ab"}
    assert "stopped at different epochs (a 2, b 1): resuming all from epoch 1" in caplog.text
    os.remove(tmp_path / "a" / "model.pth.tar-1")
    with pytest.raises(CheckpointError, match=r"model.pth.tar-1 is missing"):
        TrainerBase._common_epoch(str(tmp_path), found)
