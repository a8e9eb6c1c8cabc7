"""Checkpoints cannot run code: a pickle payload is refused on every route; upstream Dassl files
with scheduler objects still load; our own files load with ``torch.load(weights_only=True)``."""
import importlib.util
import os
import pickle

import pytest
import torch
import torch.nn as nn
from torch.optim import lr_scheduler

from dassl_lite.clip import CLIPConfig
from dassl_lite.engine.checkpoint import load_checkpoint

from .conftest import FIX, REPO, run_main, tiny_argv

TINY_CLIP = CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=32,
                       vision_patch_size=16, vision_heads=1, context_length=77, vocab_size=49408,
                       transformer_width=32, transformer_heads=1, transformer_layers=2)


class Payload:
    """Unpickling this calls ``os.system("touch MARKER")``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def evil_checkpoint(path, marker, state_dict):
    """A Dassl-layout checkpoint file whose pickle creates ``marker`` when fully unpickled."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"state_dict": state_dict, "epoch": 1, "optimizer": None, "scheduler": None,
                "val_result": Payload(marker)}, path)
    with open(os.path.join(os.path.dirname(path), "checkpoint"), "w") as f:
        f.write(os.path.basename(path) + "\n")
    return path


def tinynet_state():
    return {"1.weight": torch.zeros(16, 192), "1.bias": torch.zeros(16),
            "4.weight": torch.zeros(4, 16), "4.bias": torch.zeros(4)}


def test_the_payload_really_runs_code_when_fully_unpickled(tmp_path):
    """The test below could fail: full unpickling of this file does create the marker."""
    marker = tmp_path / "proof"
    path = evil_checkpoint(str(tmp_path / "m" / "model.pth.tar-1"), marker, tinynet_state())
    torch.load(path, weights_only=False)
    assert marker.exists()


def _assert_refused(r, marker, path):
    assert r.code == 2, r.err
    assert r.err.startswith(f"error: Refusing to load checkpoint '{path}': it needs posix.system")
    assert f"python tools/convert_checkpoint.py --trust {path} NEW_FILE" in r.err
    assert "Traceback" not in r.err
    assert not marker.exists()


def test_eval_only_model_dir_refuses_the_payload(tmp_path, tiny_root):
    marker = tmp_path / "PWNED"
    path = evil_checkpoint(str(tmp_path / "run" / "model" / "model.pth.tar-1"), marker,
                           tinynet_state())
    r = run_main(tiny_argv(tiny_root, tmp_path / "eval", "--eval-only",
                           "--model-dir", tmp_path / "run"))
    _assert_refused(r, marker, path)


def test_resume_refuses_the_payload(tmp_path, tiny_root):
    marker = tmp_path / "PWNED"
    path = evil_checkpoint(str(tmp_path / "run" / "model" / "model.pth.tar-1"), marker,
                           tinynet_state())
    r = run_main(tiny_argv(tiny_root, tmp_path / "run", "--resume", tmp_path / "run"))
    _assert_refused(r, marker, path)


def test_init_weights_refuses_the_payload(tmp_path, tiny_root, random_clip_file):
    marker = tmp_path / "PWNED"
    path = evil_checkpoint(str(tmp_path / "w" / "model.pth.tar-1"), marker,
                           {"ctx": torch.zeros(4, 32)})
    r = run_main(["--import", os.path.join(FIX, "tiny_world.py"), "--trainer", "CoOp",
                  "--root", tiny_root, "--output-dir", tmp_path / "out",
                  "--dataset-config-file", os.path.join(FIX, "tiny_dataset.yaml"),
                  "INPUT.SIZE", "(32, 32)", "MODEL.BACKBONE.NAME", random_clip_file(TINY_CLIP),
                  "TRAINER.COOP.N_CTX", "4", "TRAINER.COOP.PREC", "fp32",
                  "DATALOADER.NUM_WORKERS", "0", "MODEL.INIT_WEIGHTS", path])
    _assert_refused(r, marker, path)


def upstream_checkpoint(path, state_dict, epoch=3):
    """As upstream Dassl saves with a warmup scheduler: its ``state_dict()`` keeps the wrapped
    torch scheduler object (``successor``), which holds its SGD optimizer."""
    params = [nn.Parameter(v.clone()) for v in state_dict.values()]
    optim = torch.optim.SGD(params, lr=0.002, momentum=0.9)
    sum(p.sum() for p in params).backward()
    optim.step()
    successor = lr_scheduler.CosineAnnealingLR(optim, T_max=float(epoch))
    sched = {"successor": successor, "warmup_epoch": 1, "cons_lr": 1e-5, "base_lrs": [0.002],
             "last_epoch": epoch, "_step_count": epoch + 1, "_last_lr": [0.0]}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"state_dict": state_dict, "epoch": epoch, "optimizer": optim.state_dict(),
                "scheduler": sched, "val_result": None}, path)
    with open(os.path.join(os.path.dirname(path), "checkpoint"), "w") as f:
        f.write(os.path.basename(path) + "\n")
    return path


def test_upstream_checkpoint_with_a_scheduler_object_loads(tmp_path, tiny_root):
    state = {k: torch.randn(v.shape) for k, v in tinynet_state().items()}
    path = upstream_checkpoint(str(tmp_path / "up" / "model" / "model.pth.tar-3"), state)
    wanted = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    assert sorted(wanted) == ["builtins.dict", "collections.defaultdict",
                              "torch.optim.lr_scheduler.CosineAnnealingLR", "torch.optim.sgd.SGD"]
    ckpt = load_checkpoint(path)
    successor = ckpt["scheduler"]["successor"]
    assert isinstance(successor, dict) and successor["T_max"] == 3.0  # object -> state dict
    assert "optimizer" not in successor
    r = run_main(tiny_argv(tiny_root, tmp_path / "eval", "--eval-only",
                           "--model-dir", tmp_path / "up", "--load-epoch", "3"))
    assert r.code == 0, r.err
    import json
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["epoch"] == 3


def test_our_checkpoints_load_with_weights_only(tmp_path, tiny_root):
    out = tmp_path / "run"
    r = run_main(tiny_argv(tiny_root, out, "OPTIM.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_FREQ", "1",
                           "TEST.FINAL_MODEL", "best_val"))
    assert r.code == 0, r.err
    files = sorted(os.listdir(out / "model"))
    assert files == ["checkpoint", "model-best.pth.tar", "model.pth.tar-1", "model.pth.tar-2"]
    for name in files[1:]:
        ckpt = torch.load(out / "model" / name, weights_only=True)  # no allow-list at all
        assert set(ckpt) == {"state_dict", "epoch", "optimizer", "scheduler", "val_result",
                             "scaler", "rng_state"}
        assert isinstance(ckpt["rng_state"]["numpy"][1], torch.Tensor)
        assert isinstance(ckpt["scheduler"]["successor"], dict)  # warmup + cosine: plain data


def load_tool():
    spec = importlib.util.spec_from_file_location(
        "convert_checkpoint", os.path.join(REPO, "tools", "convert_checkpoint.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convert_checkpoint_needs_trust_and_writes_a_safe_file(tmp_path, capsys):
    state = {k: torch.randn(v.shape) for k, v in tinynet_state().items()}
    src = upstream_checkpoint(str(tmp_path / "up" / "model.pth.tar-3"), state)
    dst = tmp_path / "converted.pth.tar"
    tool = load_tool()
    assert tool.main([src, str(dst)]) == 2
    assert "pass --trust if (and only if) you trust" in capsys.readouterr().err
    assert not dst.exists()
    assert tool.main(["--trust", src, str(dst)]) == 0
    assert "loads with weights_only=True" in capsys.readouterr().out
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(dst)) == []
    ckpt = torch.load(dst, weights_only=True)
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in state.items())
    assert ckpt["scheduler"]["successor"]["T_max"] == 3.0


@pytest.mark.parametrize("extra", [[], ["--debug"]])
def test_debug_shows_the_traceback(tmp_path, tiny_root, extra, monkeypatch):
    monkeypatch.delenv("DASSL_DEBUG", raising=False)
    argv = [*extra, *tiny_argv(tiny_root, tmp_path / "o", "TEST.FINAL_MODEL", "best")]
    if not extra:
        assert run_main(argv).err.startswith("error: TEST.FINAL_MODEL must be one of")
        monkeypatch.setenv("DASSL_DEBUG", "1")
    from dassl_lite.config import ConfigError

    with pytest.raises(ConfigError, match="TEST.FINAL_MODEL must be one of"):
        run_main(argv)


def test_an_earlier_dassl_lite_checkpoint_with_a_numpy_rng_state_still_loads(tmp_path):
    import numpy as np

    from dassl_lite.utils.seed import get_rng_state

    rng = get_rng_state()
    assert isinstance(rng["numpy"][1], np.ndarray)  # as files written before this change hold it
    path = tmp_path / "model.pth.tar-1"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 1, "rng_state": rng}, path)
    ckpt = load_checkpoint(str(path))
    name, keys, pos, has_gauss, cached = ckpt["rng_state"]["numpy"]
    assert keys.dtype == np.uint32 and np.array_equal(keys, rng["numpy"][1])
    assert (name, pos, has_gauss, cached) == (rng["numpy"][0], *rng["numpy"][2:])


@pytest.mark.parametrize("damage, reason", [
    (lambda data: data[: len(data) // 2], "the file is truncated or corrupt; torch: reading zip "
                                          "archive: failed finding central directory"),
    (lambda data: data[:-40], "the file is truncated or corrupt"),
    (lambda data: b"", "the file is empty or truncated"),
    (lambda data: pickle.dumps({"a": 1})[:-3], "the file is empty or truncated"),
])
def test_convert_checkpoint_names_a_truncated_file(tmp_path, capsys, damage, reason):
    src, dst = tmp_path / "model.pth.tar-3", tmp_path / "converted.pth.tar"
    torch.save({"state_dict": {"w": torch.randn(100)}, "epoch": 3}, src)
    src.write_bytes(damage(src.read_bytes()))
    assert load_tool().main(["--trust", str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read {src}: {reason}"), err
    assert err.rstrip().endswith("expected a file written by torch.save")
    assert not dst.exists()


def test_convert_checkpoint_replaces_an_existing_output_only_with_force(tmp_path, capsys):
    src, dst = tmp_path / "in.pth", tmp_path / "out.pth"
    torch.save({"w": torch.ones(2)}, src)
    dst.write_text("the user's file")
    tool = load_tool()
    assert tool.main(["--trust", str(src), str(dst)]) == 2
    assert f"error: {dst} exists; pass --force to replace it" in capsys.readouterr().err
    assert dst.read_text() == "the user's file"
    assert tool.main(["--trust", "--force", str(src), str(dst)]) == 0
    assert torch.equal(torch.load(dst, weights_only=True)["w"], torch.ones(2))
