"""Released AF-CLIP weights (upstream layout, built here) import without running pickles."""
import os
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

from dassl_lite.clip import CLIP, CLIPConfig
from dassl_lite.engine.checkpoint import load_checkpoint
from trainers.anomaly.afclip_model import AFCLIPLearner, AFCLIPModel
from trainers.anomaly.afclip_upstream import UpstreamWeightsError, convert_upstream, load_upstream_adaptor

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = CLIPConfig(embed_dim=16, image_resolution=32, vision_layers=2, vision_width=64,
                 vision_patch_size=8, vision_heads=2, context_length=77, vocab_size=49408,
                 transformer_width=32, transformer_heads=2, transformer_layers=2)


def upstream_package():
    """A stand-in for upstream's ``clip.adaptor`` module (same class paths and attributes)."""
    pkg, mod = types.ModuleType("clip"), types.ModuleType("clip.adaptor")

    class CrossAttention(nn.Module):
        def __init__(self, dim, heads=8, dim_head=64):
            super().__init__()
            self.scale, self.heads = dim_head ** -0.5, heads
            self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
            self.to_k = nn.Linear(dim, heads * dim_head, bias=False)
            self.to_v = nn.Linear(dim, heads * dim_head, bias=False)
            self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(0.0))

    class BasicTransformerBlock(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.attn = CrossAttention(dim)
            self.norm = nn.LayerNorm(dim)

    class Adaptor(nn.Module):
        def __init__(self, inplanes=1024):
            super().__init__()
            self.attention = BasicTransformerBlock(inplanes)

    for cls in (CrossAttention, BasicTransformerBlock, Adaptor):
        cls.__module__, cls.__qualname__ = "clip.adaptor", cls.__name__
        setattr(mod, cls.__name__, cls)
    pkg.adaptor = mod
    return pkg, mod


@pytest.fixture
def released(tmp_path, monkeypatch):
    """A native learner and the same weights saved as upstream does (then upstream's classes
    are removed from sys.modules, as on a machine without upstream's code)."""
    torch.manual_seed(0)
    clip_model = CLIP(CFG).eval().requires_grad_(False)
    learner = AFCLIPLearner(clip_model, prompt_len=5)
    with torch.no_grad():
        for p in learner.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pkg, mod = upstream_package()
    monkeypatch.setitem(sys.modules, "clip", pkg)
    monkeypatch.setitem(sys.modules, "clip.adaptor", mod)
    upstream = mod.Adaptor(inplanes=CFG.vision_width)
    upstream.load_state_dict(learner.adaptor.state_dict())
    torch.save(upstream, tmp_path / "toy_adaptor.pt")
    torch.save(nn.Parameter(learner.prompt.state_prompt_embedding.detach().clone()),
               tmp_path / "toy_prompt.pt")
    monkeypatch.delitem(sys.modules, "clip.adaptor")
    monkeypatch.delitem(sys.modules, "clip")
    return clip_model, learner, tmp_path


def test_converted_checkpoint_gives_the_same_maps(released):
    clip_model, learner, weight_dir = released
    out_dir = weight_dir / "converted"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "convert_afclip.py"),
                           "--weight-dir", str(weight_dir), "--dataset", "toy",
                           "--output-dir", str(out_dir)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr
    ckpt = load_checkpoint(str(out_dir / "AFCLIPLearner" / "model.pth.tar-2"))
    fresh = AFCLIPLearner(clip_model, prompt_len=5)
    fresh.load_state_dict(ckpt["state_dict"], strict=True)
    images = torch.randn(2, 3, 32, 32)
    layers = dict(layers=[1, 2], sizes=[1, 3, 5], sigma=4.0, temperature=0.07)
    with torch.no_grad():
        native = AFCLIPModel(clip_model, learner, **layers)(images)
        imported = AFCLIPModel(clip_model, fresh, **layers)(images)
    torch.testing.assert_close(imported["anomaly_map"], native["anomaly_map"], rtol=0, atol=0)
    torch.testing.assert_close(imported["image_score"], native["image_score"], rtol=0, atol=0)


def test_state_dict_keys_and_plain_state_dict_file(released, tmp_path):
    _, learner, weight_dir = released
    state = convert_upstream(str(weight_dir), "toy")
    assert set(state) == set(learner.state_dict())
    torch.save(learner.adaptor.state_dict(), tmp_path / "sd.pt")
    assert set(load_upstream_adaptor(str(tmp_path / "sd.pt"))) == set(learner.adaptor.state_dict())


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_foreign_globals_are_refused(tmp_path):
    torch.save({"x": Exploit()}, tmp_path / "evil_adaptor.pt")
    torch.save(torch.zeros(1, 2, 32), tmp_path / "evil_prompt.pt")
    with pytest.raises(UpstreamWeightsError, match="weights_only=True .* GLOBAL posix.system"):
        convert_upstream(str(tmp_path), "evil")
    with pytest.raises(UpstreamWeightsError, match="No released AF-CLIP prompt at"):
        convert_upstream(str(tmp_path), "missing")


def test_a_truncated_release_file_is_named_as_such(released):
    _, _, weight_dir = released
    path = weight_dir / "toy_adaptor.pt"
    path.write_bytes(path.read_bytes()[:-64])
    with pytest.raises(UpstreamWeightsError, match=(
            f"Cannot read adaptor '{path}': the file is truncated or corrupt.*; expected "
            "AF-CLIP's released adaptor file")):
        convert_upstream(str(weight_dir), "toy")


def test_convert_afclip_keeps_an_existing_output_folder(released, caplog):
    from tools.convert_afclip import main

    _, _, weight_dir = released
    target = weight_dir / "run" / "AFCLIPLearner"
    target.mkdir(parents=True)
    (target / "model.pth.tar-2").write_text("a trained run's checkpoint")
    argv = ["--weight-dir", str(weight_dir), "--dataset", "toy", "--output-dir",
            str(weight_dir / "run")]
    assert main(argv) == 2
    assert (f"error: {target} holds files already (a run or an earlier conversion) that writing "
            "here would replace; choose a new --output-dir or pass --force") in caplog.text
    assert (target / "model.pth.tar-2").read_text() == "a trained run's checkpoint"
    assert main([*argv, "--force"]) == 0
    assert set(load_checkpoint(str(target / "model.pth.tar-2"))["state_dict"]) == set(
        convert_upstream(str(weight_dir), "toy"))
