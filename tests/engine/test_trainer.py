"""The engine on the tiny plug-in: resume exactness, loading, errors, results."""
import json
import os
import shutil

import pytest
import torch

from dassl_lite.engine import CheckpointError, NonFiniteLossError, build_trainer
from dassl_lite.errors import DasslLiteError
from dassl_lite.utils import set_random_seed


def build(cfg):
    set_random_seed(cfg.SEED)
    return build_trainer(cfg)


def weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_resume_is_exact(make_cfg, tmp_path):
    full = build(make_cfg("OPTIM.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_FREQ", "1",
                          output_dir=tmp_path / "full"))
    full.train()
    # A run that stopped after epoch 1: only its first checkpoint exists.
    part_dir = tmp_path / "part" / "model"
    part_dir.mkdir(parents=True)
    shutil.copy(tmp_path / "full" / "model" / "model.pth.tar-1", part_dir)
    (part_dir / "checkpoint").write_text("model.pth.tar-1\n")
    resumed = build(make_cfg("OPTIM.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_FREQ", "1",
                             output_dir=tmp_path / "part"))
    torch.manual_seed(12345)  # the resumed run must not depend on the RNG state it starts with
    resumed.train()
    assert resumed.start_epoch == 1
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert full.get_current_lr() == resumed.get_current_lr()


def test_train_writes_results_and_log(make_cfg, tmp_path):
    trainer = build(make_cfg(output_dir=tmp_path / "run"))
    trainer.train()
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["split"] == "test" and res["num_samples"] == 16 and res["epoch"] == 3
    assert res["trainer"] == "TinyNet" and res["dataset"] == "TinyColors" and res["seed"] == 1
    assert 0 <= res["accuracy"] <= 100
    assert sorted(os.listdir(tmp_path / "run" / "model")) == ["checkpoint", "model.pth.tar-3"]


def test_load_model_epoch_and_none_val_result(make_cfg, tmp_path, caplog):
    trainer = build(make_cfg(output_dir=tmp_path / "run"))
    trainer.train()
    acc = trainer.test()
    fresh = build(make_cfg(output_dir=tmp_path / "eval"))
    caplog.set_level("INFO")
    fresh.load_model(str(tmp_path / "run"), epoch=3)  # val_result is None in this checkpoint
    assert "epoch=3)" in caplog.text
    assert fresh.test() == acc
    fresh.load_model(str(tmp_path / "run"))  # no best file: the latest one is used
    with pytest.raises(CheckpointError, match=r"No checkpoint at '.*model.pth.tar-7'"):
        fresh.load_model(str(tmp_path / "run"), epoch=7)


def test_load_reports_shape_and_keys(make_cfg, tmp_path):
    trainer = build(make_cfg(output_dir=tmp_path / "run"))
    trainer.train()
    other = build(make_cfg("TRAINER.TINYNET.HIDDEN", "8", output_dir=tmp_path / "o"))
    with pytest.raises(CheckpointError) as e:
        other.load_model(str(tmp_path / "run"), epoch=3)
    assert "'1.weight' has shape (16, 192) but the model expects (8, 192)" in str(e.value)
    path = tmp_path / "run" / "model" / "model.pth.tar-3"
    ckpt = torch.load(path, weights_only=False)
    ckpt["state_dict"]["extra.ctx"] = torch.zeros(1)
    del ckpt["state_dict"]["4.bias"]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as e:
        trainer.load_model(str(tmp_path / "run"), epoch=3)
    assert "missing trainable keys ['4.bias']; unexpected keys ['extra.ctx']" in str(e.value)


def test_nonfinite_loss_stops_and_keeps_checkpoint(make_cfg, tmp_path, monkeypatch):
    trainer = build(make_cfg("TRAIN.CHECKPOINT_FREQ", "1", output_dir=tmp_path / "run"))
    original = type(trainer).forward_backward
    calls = {"n": 0}

    def poisoned(self, batch):
        calls["n"] += 1
        if self.epoch == 1 and self.batch_idx == 2:
            with torch.no_grad():
                self.model[1].weight.fill_(float("nan"))
        return original(self, batch)

    monkeypatch.setattr(type(trainer), "forward_backward", poisoned)
    with pytest.raises(NonFiniteLossError) as e:
        trainer.train()
    msg = str(e.value)
    assert "at epoch 2, batch 3 (step 8)" in msg and "model.pth.tar-1" in msg
    ckpt = torch.load(tmp_path / "run" / "model" / "model.pth.tar-1", weights_only=False)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    assert not (tmp_path / "run" / "results.json").exists()


def test_val_requested_without_val_split(make_cfg, tmp_path, monkeypatch):
    trainer = build(make_cfg(output_dir=tmp_path / "run"))
    monkeypatch.setattr(trainer, "val_loader", None)
    with pytest.raises(DasslLiteError, match="has no val split"):
        trainer.test(split="val")


def test_best_val_saves_best_and_deploys_it(make_cfg, tmp_path):
    trainer = build(make_cfg("TEST.FINAL_MODEL", "best_val", output_dir=tmp_path / "run"))
    trainer.train()
    files = sorted(os.listdir(tmp_path / "run" / "model"))
    assert "model-best.pth.tar" in files and "model.pth.tar-3" in files
    best = torch.load(tmp_path / "run" / "model" / "model-best.pth.tar", weights_only=False)
    assert isinstance(best["val_result"], float)


def test_bf16_precision_trains_on_cpu(make_cfg, tmp_path):
    trainer = build(make_cfg("TRAINER.TINYNET.PREC", "amp", output_dir=tmp_path / "run"))
    assert trainer.precision.autocast_dtype == torch.bfloat16 and trainer.scaler is None
    trainer.train()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_fp16_on_cpu_falls_back(make_cfg, tmp_path, caplog):
    caplog.set_level("WARNING")
    trainer = build(make_cfg("TRAINER.TINYNET.PREC", "fp16", output_dir=tmp_path / "run"))
    assert trainer.precision.name == "fp32"
    assert "TRAINER.TINYNET.PREC=fp16 needs a GPU; running in fp32 on cpu" in caplog.text
    with pytest.raises(DasslLiteError, match="must be one of fp16, fp32, amp, bf16; got 'fp8'"):
        build(make_cfg("TRAINER.TINYNET.PREC", "fp8", output_dir=tmp_path / "r2"))
