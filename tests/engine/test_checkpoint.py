import os

import pytest
import torch
import torch.nn as nn

from dassl_lite.engine.checkpoint import (
    CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint, trainable_state_dict,
)


def test_trainable_state_dict_skips_frozen():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
    model[0].requires_grad_(False)
    model[1].weight.requires_grad_(False)  # BN keeps a trainable bias -> its buffers are kept
    keys = list(trainable_state_dict(model))
    assert keys == ["1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked",
                    "2.weight", "2.bias"]


def state(epoch, value):
    return {"state_dict": {"module.w": torch.full((2,), float(value))}, "epoch": epoch,
            "optimizer": None, "scheduler": None, "val_result": None}


def test_layout_and_pointer(tmp_path):
    d = str(tmp_path / "prompt_learner")
    save_checkpoint(state(1, 1), d)
    save_checkpoint(state(2, 2), d, is_best=True)
    assert sorted(os.listdir(d)) == ["checkpoint", "model-best.pth.tar", "model.pth.tar-1",
                                     "model.pth.tar-2"]
    assert open(os.path.join(d, "checkpoint")).read() == "model.pth.tar-2\n"
    assert latest_checkpoint(d).endswith("model.pth.tar-2")
    ckpt = load_checkpoint(os.path.join(d, "model-best.pth.tar"))
    assert list(ckpt["state_dict"]) == ["w"]  # "module." (DataParallel) prefix stripped
    assert ckpt["epoch"] == 2


def test_crash_mid_write_keeps_previous(tmp_path, monkeypatch):
    d = str(tmp_path / "model")
    save_checkpoint(state(1, 1), d)

    def crashing_save(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(state(2, 2), d)
    monkeypatch.undo()
    assert sorted(os.listdir(d)) == ["checkpoint", "model.pth.tar-1"]  # no temp file left
    path = latest_checkpoint(d)
    assert path.endswith("model.pth.tar-1")
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(2))


def test_missing_and_corrupt_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint at '.*model.pth.tar-9'"):
        load_checkpoint(str(tmp_path / "model.pth.tar-9"))
    bad = tmp_path / "model.pth.tar-1"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="Cannot read checkpoint"):
        load_checkpoint(str(bad))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    from dassl_lite.utils.io import atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_text(str(tmp_path / "a.txt"), "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600
