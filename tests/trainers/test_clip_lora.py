"""CLIP-LoRA: LoRA attention against merged weights, upstream's layer positions, a start equal to
zero-shot CLIP, and checkpoints that hold only the LoRA tensors and reload to identical logits."""
import math
import os

import pytest
import torch

from dassl_lite.clip.transformer import MultiheadSelfAttention
from dassl_lite.engine import load_checkpoint
from trainers.lora import LoRASelfAttention, lora_layers


@pytest.mark.parametrize("position, depth, layers", [
    ("bottom", 12, [0, 1, 2, 3]), ("mid", 12, [4, 5, 6, 7]), ("up", 12, [8, 9, 10, 11]),
    ("half-up", 12, [6, 7, 8, 9, 10, 11]), ("half-bottom", 12, [0, 1, 2, 3, 4, 5]),
    ("top3", 12, [9, 10, 11]), ("all", 12, list(range(12))), ("top2", 12, [10, 11]),
    ("bottom", 4, [0]), ("up", 4, [3]), ("all", 4, [0, 1, 2, 3]),
])
def test_positions(position, depth, layers):
    assert lora_layers(position, depth) == layers


def test_unknown_position_is_named():
    with pytest.raises(Exception, match="got 'middle'"):
        lora_layers("middle", 12)


@pytest.mark.parametrize("params", [["q", "k", "v"], ["v", "o"]])
@pytest.mark.parametrize("causal", [False, True])
def test_lora_attention_equals_attention_with_merged_weights(params, causal):
    torch.manual_seed(0)
    width, r, alpha = 16, 2, 1.0
    attn = MultiheadSelfAttention(width, heads=2)
    lora = LoRASelfAttention(attn, params, r=r, alpha=alpha, dropout=0.25).eval()
    for name in ("q_proj", "k_proj", "v_proj", "proj"):
        if getattr(lora, name) is not None:
            torch.nn.init.normal_(getattr(lora, name).w_lora_B)
    merged = MultiheadSelfAttention(width, heads=2)
    with torch.no_grad():
        deltas = [torch.zeros(width, width)] * 3
        for i, p in enumerate("qkv"):
            if p in params:
                f = getattr(lora, f"{p}_proj")
                deltas[i] = f.w_lora_B @ f.w_lora_A / math.sqrt(r) * alpha
        merged.in_proj_weight.copy_(attn.in_proj_weight + torch.cat(deltas))
        merged.in_proj_bias.copy_(attn.in_proj_bias)
        merged.out_proj.weight.copy_(attn.out_proj.weight)
        merged.out_proj.bias.copy_(attn.out_proj.bias)
        if "o" in params:
            merged.out_proj.weight += lora.proj.w_lora_B @ lora.proj.w_lora_A / math.sqrt(r)
    x = torch.randn(3, 5, width)
    assert torch.allclose(lora(x, causal=causal), merged(x, causal=causal), atol=1e-5)
    # the frozen tensors are shared, not copied, and keep OpenAI's names
    assert lora.in_proj_weight is attn.in_proj_weight
    assert {"in_proj_weight", "in_proj_bias", "out_proj.weight"} <= set(lora.state_dict())


def test_starts_as_zero_shot_clip_and_trains_only_lora(build, tmp_path):
    lora = build("CLIPLoRA", output_dir=tmp_path / "lora")
    zs = build("ZeroshotCLIP", output_dir=tmp_path / "zs")
    images = next(iter(lora.test_loader))["img"]
    lora.set_model_mode("eval")
    with torch.no_grad():
        assert torch.allclose(lora.model(images), zs.model(images), atol=1e-5)
    trainable = [k for k, p in lora.model.named_parameters() if p.requires_grad]
    # both encoders (2 blocks each), q/k/v, A and B
    assert len(trainable) == 2 * 2 * 3 * 2 and all("_lora_" in k for k in trainable)


def test_checkpoint_holds_only_lora_tensors_and_reloads_to_identical_logits(build, tmp_path):
    trainer = build("CLIPLoRA", "TRAINER.CLIP_LORA.PARAMS", "['q', 'k', 'v', 'o']",
                    "OPTIM.NAME", "adamw", "OPTIM.LR", "0.01", output_dir=tmp_path / "a")
    trainer.train()
    ckpt = load_checkpoint(os.path.join(trainer.output_dir, "clip_lora", "model.pth.tar-1"))
    keys = list(ckpt["state_dict"])
    assert len(keys) == 2 * 2 * 4 * 2 and all("_lora_" in k for k in keys), keys
    assert "visual.transformer.resblocks.1.attn.proj.w_lora_B" in keys
    assert "transformer.resblocks.0.attn.q_proj.w_lora_A" in keys
    assert any(v.abs().sum() > 0 for k, v in ckpt["state_dict"].items() if k.endswith("lora_B"))
    fresh = build("CLIPLoRA", "TRAINER.CLIP_LORA.PARAMS", "['q', 'k', 'v', 'o']",
                  output_dir=tmp_path / "b")
    images = next(iter(fresh.test_loader))["img"]
    fresh.set_model_mode("eval")
    trainer.set_model_mode("eval")
    with torch.no_grad():
        before = fresh.model(images)
        fresh.load_model(str(tmp_path / "a"), epoch=1)
        after, trained = fresh.model(images), trainer.model(images)
    assert torch.equal(after, trained)
    assert not torch.allclose(before, trained)
