"""tools/pretrain_toy_clip.py: a tiny pretraining run, its checkpoint format and determinism."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dassl_lite.clip import load_clip
from tests.tool_modules import registered_tool

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "pretrain_toy_clip.py"
# A tiny architecture (seconds on CPU); the shipped model is larger (see ToyCLIP.json).
TINY = ["--vision-width", "64", "--vision-layers", "2", "--text-width", "64",
        "--text-layers", "2", "--embed-dim", "32", "--patch-size", "16", "--batch-size", "8"]


@pytest.fixture(scope="module")
def tool():
    with registered_tool("pretrain_toy_clip") as module:
        yield module


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def openai_vit_keys(vision_layers: int, text_layers: int) -> set:
    """The keys of an OpenAI ViT CLIP state dict (as its TorchScript archives hold them)."""
    block = ["attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
             "attn.out_proj.bias", "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
             "mlp.c_proj.weight", "mlp.c_proj.bias", "ln_2.weight", "ln_2.bias"]
    keys = {"positional_embedding", "text_projection", "logit_scale", "input_resolution",
            "context_length", "vocab_size", "token_embedding.weight", "ln_final.weight",
            "ln_final.bias", "visual.class_embedding", "visual.positional_embedding",
            "visual.proj", "visual.conv1.weight", "visual.ln_pre.weight", "visual.ln_pre.bias",
            "visual.ln_post.weight", "visual.ln_post.bias"}
    keys |= {f"visual.transformer.resblocks.{i}.{k}" for i in range(vision_layers) for k in block}
    keys |= {f"transformer.resblocks.{i}.{k}" for i in range(text_layers) for k in block}
    return keys


def test_cli_writes_loadable_openai_checkpoint(tmp_path):
    out = tmp_path / "ckpt" / "Toy.pt"
    cmd = [sys.executable, str(TOOL), "--steps", "2", "--seed", "3", "--threads", "1",
           "--log-every", "1", "--out", str(out), *TINY]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "step 2/2  loss " in r.stderr and " steps/s  ETA " in r.stderr

    sd = torch.load(out, map_location="cpu", weights_only=True)
    assert type(sd) is dict and set(sd) == openai_vit_keys(2, 2)
    assert {k for k, v in sd.items() if v.dtype != torch.float16} == {
        "input_resolution", "context_length", "vocab_size"}
    assert [sd[k].item() for k in ("input_resolution", "context_length", "vocab_size")] == [
        64, 77, 49408]
    assert sd["token_embedding.weight"].shape == (49408, 64)
    assert sd["visual.conv1.weight"].shape == (64, 3, 16, 16)
    assert sd["text_projection"].shape == (64, 32)
    assert not list(out.parent.glob(".*"))  # no temporary file left behind

    model = load_clip(out)
    assert (model.visual.input_resolution, model.visual.layers, model.visual.width) == (64, 2, 64)
    assert (model.transformer.layers, model.transformer.width, model.embed_dim) == (2, 64, 32)
    assert model.dtype == torch.float32
    assert torch.equal(model.token_embedding.weight, sd["token_embedding.weight"].float())

    record = json.loads(out.with_suffix(".json").read_text())
    assert record["command"] == "python tools/pretrain_toy_clip.py " + " ".join(cmd[2:])
    assert record["seed"] == 3 and record["threads"] == 1 and record["steps_per_s"] > 0
    assert record["file_size_bytes"] == out.stat().st_size
    assert record["config"]["arch"]["vision_width"] == 64
    assert record["config"]["train"] == {"steps": 2, "batch_size": 8, "lr": 5e-4,
                                         "weight_decay": 0.1, "warmup_steps": 1, "seed": 3}
    assert "zero_shot" not in record


def test_same_seed_same_weights_other_seed_differs(tool, tmp_path, keep_threads):
    def run(seed, name, workers=0):
        args = tool.parse_args(["--steps", "3", "--seed", str(seed), "--threads", "1",
                                "--workers", str(workers),
                                "--out", str(tmp_path / name), *TINY])
        tool.run(args, "test")
        return torch.load(tmp_path / name, weights_only=True)

    a, b, c = run(0, "a.pt"), run(0, "b.pt", workers=1), run(1, "c.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["visual.conv1.weight"], c["visual.conv1.weight"])
    init = tool.openai_state_dict(tool.build_toy_clip(tool.ArchConfig(
        vision_width=64, vision_layers=2, text_width=64, text_layers=2, embed_dim=32,
        patch_size=16), seed=0))
    assert not torch.equal(a["visual.conv1.weight"], init["visual.conv1.weight"])  # it trained


def test_stream_is_deterministic_and_never_uses_split_images(tool, monkeypatch):
    calls = []
    render = tool.render

    def spy(domain, label, index, seed=0, size=64):
        calls.append((domain, label, index, seed))
        return render(domain, label, index, seed, size)

    monkeypatch.setattr(tool, "render", spy)
    stream = tool.PairStream(tool.PairSampler(tool.DataConfig(), batch_size=16, seed=5), 64, 77)
    images, tokens = stream.batch(7)
    assert images.shape == (16, 3, 64, 64) and tokens.shape == (16, 77)
    assert [c[2] for c in calls] == list(range(tool.PRETRAIN_INDEX_START + 7 * 16,
                                               tool.PRETRAIN_INDEX_START + 8 * 16))
    assert {c[3] for c in calls} == {5}
    again = tool.PairStream(tool.PairSampler(tool.DataConfig(), 16, 5), 64, 77).batch(7)
    assert torch.equal(images, again[0]) and torch.equal(tokens, again[1])
    assert not torch.equal(tokens, stream.batch(8)[1])


def test_render_workers_give_the_same_batches(tool):
    stream = tool.PairStream(tool.PairSampler(tool.DataConfig(), batch_size=4, seed=1), 32, 77)
    inline = list(stream.batches(3, workers=0))
    ahead = list(stream.batches(3, workers=1, prefetch=2))
    assert len(inline) == len(ahead) == 3
    for (x0, t0), (x1, t1) in zip(inline, ahead):
        assert x0.shape == (4, 3, 32, 32) and torch.equal(x0, x1) and torch.equal(t0, t1)


def test_preprocessing_is_clip_normalisation(tool):
    from PIL import Image

    x = tool.to_tensor([Image.new("RGB", (64, 64), (255, 0, 128))], 64)
    expected = [(1 - 0.48145466) / 0.26862954, -0.4578275 / 0.26130258,
                (128 / 255 - 0.40821073) / 0.27577711]
    assert torch.allclose(x[0, :, 5, 5], torch.tensor(expected))
    assert tool.to_tensor([Image.new("RGB", (80, 80))], 32).shape == (1, 3, 32, 32)


def test_captions_are_web_like_and_seeded(tool):
    import numpy as np

    cfg = tool.CaptionConfig()

    def draw(domain, n=600):
        return [tool.caption(0, domain, np.random.default_rng(i), cfg) for i in range(n)]

    name = tool.CLASSNAMES[0]  # "red circle", whose typical domain is ToyShapes
    assert [tool.typical_domain(i) for i in range(4)] == [
        "ToyShapes", "ToyTextures", "ToySketch", "ToyShapes"]
    generic = {t.format(name) for t in tool.TEMPLATES}
    sketch, shapes = draw("ToySketch"), draw("ToyShapes")
    assert sketch == draw("ToySketch")
    full = [t for t in sketch if name in t]
    assert 0.82 < len(full) / len(sketch) < 0.94  # the rest: partial or mismatched captions
    assert any(t.startswith("a sketch of a red circle") for t in full)
    assert any(t.endswith(", clip art.") for t in full)
    assert any("red" in t and "circle" not in t for t in sketch)
    assert any("circle" in t and "red" not in t for t in sketch)

    def generic_share(texts):
        full = [t for t in texts if name in t and not any(w in t for w in tool.EXTRA_WORDS)]
        return sum(t in generic for t in full) / len(full)

    # generic captions ("a photo of a red circle.") come mostly from the typical domain
    assert generic_share(shapes) > 0.7 and generic_share(sketch) < 0.2


def test_lr_schedule_warms_up_then_decays_to_zero(tool):
    cfg = tool.TrainConfig(steps=110, warmup_steps=10, lr=1e-3)
    assert tool.lr_at(0, cfg) == pytest.approx(1e-4)
    assert tool.lr_at(9, cfg) == pytest.approx(1e-3)
    assert tool.lr_at(60, cfg) == pytest.approx(5e-4)
    assert tool.lr_at(110, cfg) == pytest.approx(0.0, abs=1e-12)
    assert math.isclose(tool.lr_at(10, cfg), 1e-3)


def test_top1_table_all_base_new(tool):
    labels = torch.tensor([0, 1, 32, 33])
    logits = torch.zeros(4, 64)
    logits[0, 0] = 1  # right
    logits[1, 40] = 2  # wrong overall (a new class), right among the base classes
    logits[1, 1] = 1
    logits[2, 5] = 1  # wrong overall, and among the new classes (40 beats 32)
    logits[2, 40] = 0.5
    logits[3, 33] = 1  # right
    assert tool.top1_table(logits, labels) == {"all": 50.0, "base": 100.0, "new": 50.0}
