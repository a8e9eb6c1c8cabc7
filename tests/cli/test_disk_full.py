"""A full disk (ENOSPC simulated by failing the write's fsync) stops with one message naming the
directory and the bytes needed; the previous checkpoint stays loadable and nothing half-written
is left. Temporary files of a killed write are removed on the next save or resume."""
import errno
import io
import logging
import os

import pytest
import torch

from dassl_lite.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from dassl_lite.utils.io import DiskFullError

from .conftest import run_main, tiny_argv

REAL_FSYNC = os.fsync


def fail_fsync_for(name):
    """An ``os.fsync`` that raises ENOSPC for temporary files of ``name``."""

    def fsync(fd):
        if f".{name}." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return REAL_FSYNC(fd)

    return fsync


def state(epoch):
    return {"state_dict": {"w": torch.full((1000,), float(epoch))}, "epoch": epoch,
            "optimizer": None, "scheduler": None, "val_result": None}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    d = str(tmp_path / "model")
    save_checkpoint(state(1), d)
    buffer = io.BytesIO()
    torch.save(state(2), buffer)
    monkeypatch.setattr(os, "fsync", fail_fsync_for("model.pth.tar-2"))
    with pytest.raises(DiskFullError) as info:
        save_checkpoint(state(2), d)
    message = str(info.value)
    assert message.startswith(f"No space left on device in {d}: writing model.pth.tar-2 needs "
                              f"{len(buffer.getvalue()):,} bytes (")
    assert "bytes free). Nothing was half-written" in message
    assert sorted(os.listdir(d)) == ["checkpoint", "model.pth.tar-1"]
    assert torch.equal(load_checkpoint(latest_checkpoint(d))["state_dict"]["w"],
                       torch.full((1000,), 1.0))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_disk_full_during_training_is_one_message(tmp_path, tiny_root, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(os, "fsync", fail_fsync_for("model.pth.tar-2"))
    r = run_main(tiny_argv(tiny_root, out, "OPTIM.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_FREQ", "1"))
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith(f"error: No space left on device in {out / 'model'}: writing "
                               f"model.pth.tar-2 needs ")
    assert sorted(os.listdir(out / "model")) == ["checkpoint", "model.pth.tar-1"]
    assert load_checkpoint(str(out / "model" / "model.pth.tar-1"))["epoch"] == 1


def test_a_full_log_file_is_reported_once(tmp_path, capsys):
    from dassl_lite.utils.logger import setup_logger

    root = logging.getLogger()
    saved = list(root.handlers)
    try:
        setup_logger(str(tmp_path))
        handler = [h for h in root.handlers if isinstance(h, logging.FileHandler)
                   and getattr(h, "_dassl_lite_handler", False)][0]

        class Full(io.StringIO):
            def write(self, s):
                raise OSError(errno.ENOSPC, "No space left on device")

        handler.stream = Full()
        for i in range(3):
            logging.getLogger("x").info(f"line {i}")
    finally:
        for h in [h for h in root.handlers if h not in saved]:
            root.removeHandler(h)
        root.handlers[:] = saved
    err = capsys.readouterr().err
    assert err.count("warning: cannot write the log file") == 1
    assert "(No space left on device); logging to the console only" in err
    assert "Logging error" not in err


def test_stale_temp_files_are_removed_on_the_next_save(tmp_path):
    d = tmp_path / "model"
    save_checkpoint(state(1), str(d))
    stale = [".model.pth.tar-2.k3j2h1.tmp", ".checkpoint.a1b2.tmp", ".model-best.pth.tar.x.tmp"]
    for name in stale + ["notes.tmp"]:  # not ours: kept
        (d / name).write_bytes(b"half")
    save_checkpoint(state(2), str(d))
    assert sorted(os.listdir(d)) == ["checkpoint", "model.pth.tar-1", "model.pth.tar-2",
                                     "notes.tmp"]


def test_resuming_a_finished_run_says_so_evaluates_and_cleans_temp_files(tmp_path, tiny_root):
    out = tmp_path / "run"
    assert run_main(tiny_argv(tiny_root, out, "OPTIM.MAX_EPOCH", "1")).code == 0
    (out / "model" / ".model.pth.tar-2.zz9.tmp").write_bytes(b"killed mid-write")
    (out / "results.json").unlink()
    r = run_main(tiny_argv(tiny_root, out, "--resume", out, "OPTIM.MAX_EPOCH", "1"))
    assert r.code == 0, r.err
    assert (f"The run in {out} already finished (epoch 1 of 1): nothing left to train; "
            f"evaluating its final model") in r.out
    assert "Removed 1 leftover temporary file(s) of an interrupted checkpoint write: " \
           ".model.pth.tar-2.zz9.tmp" in r.out
    assert sorted(os.listdir(out / "model")) == ["checkpoint", "model.pth.tar-1"]
    assert (out / "results.json").is_file()
