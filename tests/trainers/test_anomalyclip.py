"""AnomalyCLIP: the maths of zqhang/AnomalyCLIP on small cases (DPAM against a hand-written
dual-path block, the identical-maps option, the loss terms, the map and score formulas), the
safe converter, and a toy training step + evaluation. No upstream code is needed."""
import importlib.util
import json
import logging
import os

import pytest
import torch
import torch.nn.functional as F

from dassl_lite.clip import CLIP, CLIPConfig, tokenize
from dassl_lite.config import ConfigError
from dassl_lite.engine.anomaly_core import (ReleasedWeightsError, dpam_forward_features,
                                            patch_state_maps)
from trainers.anomaly.anomalyclip import convert_upstream
from trainers.anomaly.anomalyclip_model import (AnomalyCLIPModel, AnomalyCLIPPromptLearner,
                                                anomalyclip_loss, state_prompt_texts)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    "convert_anomalyclip", os.path.join(REPO, "tools", "convert_anomalyclip.py"))
convert_anomalyclip = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convert_anomalyclip)

# 3 vision blocks (width 16, 2 heads), 3 text layers, 32 px images in 8 px patches: a 4x4 grid
SMALL = CLIPConfig(embed_dim=12, image_resolution=32, vision_layers=3, vision_width=16,
                   vision_patch_size=8, vision_heads=2, context_length=77, vocab_size=49408,
                   transformer_width=16, transformer_heads=2, transformer_layers=3)


@pytest.fixture(scope="module")
def small_clip():
    torch.manual_seed(0)
    model = CLIP(SMALL).eval().requires_grad_(False)
    for p in model.parameters():  # OpenAI's init leaves biases 0: make every term count
        p.data.add_(0.05 * torch.randn_like(p))
    return model


def reference_attention(block, x, q_from, k_from):
    """Upstream's ``Attention``: explicit softmax(a b^T * d^-0.5) v per head, a/b in {q, k, v}."""
    n, length, width = x.shape
    heads = block.attn.heads
    qkv = F.linear(x, block.attn.in_proj_weight, block.attn.in_proj_bias)
    q, k, v = qkv.reshape(n, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    parts = {"q": q, "k": k, "v": v}
    a, b = parts[q_from], parts[k_from]
    probs = (a @ b.transpose(-2, -1) * (width // heads) ** -0.5).softmax(dim=-1)
    return block.attn.out_proj((probs @ v).transpose(1, 2).reshape(n, length, width))


def reference_dual_path(visual, images, layers, first):
    """Upstream's ResidualAttentionBlock (ffn=False) restated: plain blocks before ``first``
    (0-based), then x_ori <- x_ori + attn + mlp and x <- x + vv(ln_1(x_ori)); each requested
    block's tokens copied (upstream after its 2025 fix)."""
    x = visual.ln_pre(visual.embed(images))
    z, out = None, {}
    for i, block in enumerate(visual.transformer.resblocks):
        if i < first:
            x = block(x)
        else:
            h = block.ln_1(x)
            z = (x if z is None else z) + reference_attention(block, h, "v", "v")
            x = x + reference_attention(block, h, "q", "k")
            x = x + block.mlp(block.ln_2(x))
        out[i + 1] = (x if z is None else z).clone()
    return [out[b] for b in layers], x


def test_dpam_equals_a_hand_written_dual_path(small_clip):
    visual = small_clip.visual
    images = torch.randn(2, 3, 32, 32)
    feats = dpam_forward_features(visual, images, (1, 2, 3), dpam_layer=3)  # DPAM in blocks 2, 3
    ref_tokens, ref_final = reference_dual_path(visual, images, (1, 2, 3), first=1)
    for ours, ref in zip(feats.tokens, ref_tokens):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats.final, ref_final, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(feats.tokens[1], feats.tokens[2])  # distinct layers without the quirk
    # the plain path is CLIP's own encoder; DPAM_LAYER 1 is no DPAM at all
    plain = visual.forward_features(images, (1, 2, 3))
    torch.testing.assert_close(feats.final, visual.forward_features(images, (3,)).tokens[0])
    none = dpam_forward_features(visual, images, (1, 2, 3), dpam_layer=1)
    for a, b in zip(none.tokens, plain.tokens):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"DPAM_LAYER must lie in 1..4 for a 3-block ViT.*got 5"):
        dpam_forward_features(visual, images, (1,), dpam_layer=5)


def test_identical_layer_maps_option_is_upstreams_aliasing(small_clip):
    visual = small_clip.visual
    images = torch.randn(2, 3, 32, 32)
    fixed = dpam_forward_features(visual, images, (1, 2, 3), dpam_layer=3)
    quirk = dpam_forward_features(visual, images, (1, 2, 3), dpam_layer=3, identical_layers=True)
    # blocks 1 (fed to the first DPAM block, which adds to it in place), 2 and 3 are all block 3's
    assert quirk.tokens[0] is quirk.tokens[1] is quirk.tokens[2]
    torch.testing.assert_close(quirk.tokens[0], fixed.tokens[2])
    torch.testing.assert_close(quirk.final, fixed.final)
    late = dpam_forward_features(visual, images, (1, 3), dpam_layer=2, identical_layers=True)
    torch.testing.assert_close(late.tokens[0], fixed.tokens[0])  # before the aliased blocks
    text = F.normalize(torch.randn(2, 12), dim=-1)
    proj = [F.normalize(visual.project_tokens(t), dim=-1) for t in quirk.tokens]
    maps = patch_state_maps([proj[0], proj[0]], text, (8, 8), 0.07)
    assert maps[0] is maps[1] and maps[0].shape == (2, 2, 8, 8)


def test_maps_are_softmax_then_bilinear_and_the_score_formula():
    torch.manual_seed(1)
    feats = F.normalize(torch.randn(1, 1 + 4, 6), dim=-1)  # CLS + a 2x2 grid
    text = F.normalize(torch.randn(2, 6), dim=-1)
    (m,) = patch_state_maps([feats], text, (4, 4), 0.07)
    probs = torch.softmax(feats[0, 1:] @ text.t() / 0.07, dim=-1)  # [4, 2]
    # align_corners=False at 2x: output pixel (0, 0) is input cell (0, 0) itself
    torch.testing.assert_close(m[0, :, 0, 0], probs[0])
    # between cells (0, 0) and (0, 1): pixel (0, 1) = 0.75 * cell (0, 0) + 0.25 * cell (0, 1)
    torch.testing.assert_close(m[0, :, 0, 1], 0.75 * probs[0] + 0.25 * probs[1])
    torch.testing.assert_close(m.sum(dim=1), torch.ones(1, 4, 4))


def upstream_focal(logit, target, gamma=2, smooth=1e-5):
    """loss.py FocalLoss() (alpha None, size_average) restated on [B, 2, H, W] probabilities."""
    logit = logit.reshape(logit.shape[0], 2, -1).permute(0, 2, 1).reshape(-1, 2)
    idx = target.reshape(-1, 1).long()
    one_hot = torch.zeros(idx.shape[0], 2).scatter_(1, idx, 1).clamp(smooth, 1.0 - smooth)
    pt = (one_hot * logit).sum(1) + smooth
    return (-torch.pow(1 - pt, gamma) * pt.log()).mean()


def upstream_dice(p, t):
    n = t.shape[0]
    p, t = p.reshape(n, -1), t.reshape(n, -1)
    return 1 - ((2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).sum() / n


def test_loss_terms_on_tiny_tensors():
    torch.manual_seed(2)
    maps = [torch.softmax(torch.randn(2, 2, 3, 3), dim=1) for _ in range(2)]
    masks = torch.zeros(2, 1, 3, 3)
    masks[0, 0, :2, :2] = 0.8
    masks[1, 0, 2, 2] = 0.4  # below 0.5: normal
    logits = torch.tensor([[3.0, -1.0], [0.5, 0.25]])
    labels = torch.tensor([1, 0])
    terms = anomalyclip_loss({"maps": maps, "image_logits": logits}, labels, masks, lam=4.0)
    gt = (masks[:, 0] > 0.5).float()
    focal = sum(upstream_focal(m, gt) for m in maps)
    dice = sum(upstream_dice(m[:, 1], gt) + upstream_dice(m[:, 0], 1 - gt) for m in maps)
    image = -(torch.log_softmax(logits, -1)[0, 1] + torch.log_softmax(logits, -1)[1, 0]) / 2
    assert terms["focal"].item() == pytest.approx(focal.item(), rel=1e-6)
    assert terms["dice"].item() == pytest.approx(dice.item(), rel=1e-6)
    assert terms["image_loss"].item() == pytest.approx(image.item(), rel=1e-6)
    assert terms["loss"].item() == pytest.approx((image + 4 * (focal + dice)).item(), rel=1e-6)
    # the same map object twice counts twice (identical layer maps), as two equal copies do
    twice = anomalyclip_loss({"maps": [maps[0], maps[0]], "image_logits": logits}, labels, masks, 1.0)
    copies = anomalyclip_loss({"maps": [maps[0], maps[0].clone()], "image_logits": logits},
                              labels, masks, 1.0)
    assert twice["loss"].item() == pytest.approx(copies["loss"].item(), rel=1e-6)


def test_prompts_deep_prompts_and_scores(small_clip):
    torch.manual_seed(3)
    learner = AnomalyCLIPPromptLearner(small_clip, n_ctx=3, depth=3, t_n_ctx=2)
    assert sorted(dict(learner.named_parameters())) == [
        "compound_prompts_text.0", "compound_prompts_text.1", "ctx_neg", "ctx_pos"]
    assert state_prompt_texts(3) == ["X X X object.", "X X X damaged object."]
    x, eot, deep = learner()
    tokens = tokenize(state_prompt_texts(3))
    assert torch.equal(eot, tokens.argmax(-1)) and eot.tolist() == [6, 7]  # SOT X X X obj . EOT
    torch.testing.assert_close(x[0, 1:4], learner.ctx_pos[0, 0])
    torch.testing.assert_close(x[1, 4:], small_clip.token_embedding(tokens[1, 4:]))
    assert all(d.dtype == torch.float16 for d in deep)  # upstream's .half()
    small_clip.visual.pos_interpolation = "bilinear"
    model = AnomalyCLIPModel(small_clip, learner, (1, 2, 3), 0, 3, 0.07, True, True)
    images = torch.randn(2, 3, 32, 32)
    out = model(images)
    text = model.text_features()
    feats = dpam_forward_features(small_clip.visual, images, (3,), 3)
    image = F.normalize(feats.final[:, 0] @ small_clip.visual.proj, dim=-1)  # no ln_post
    torch.testing.assert_close(out["image_score"], torch.softmax(image @ text.t() / 0.07, -1)[:, 1])
    # three identical maps (the quirk): the map is 3 x (p_ab + 1 - p_n) / 2 of block 3
    proj = F.normalize(small_clip.visual.project_tokens(feats.tokens[0]), dim=-1)
    (m,) = patch_state_maps([proj], text, (32, 32), 0.07)
    torch.testing.assert_close(out["anomaly_map"], 3 * (m[:, 1] + 1 - m[:, 0]) / 2)
    # the deep prompts reach the text features; without fp16 rounding they differ slightly
    exact = AnomalyCLIPModel(small_clip, learner, (1, 2, 3), 0, 3, 0.07, True, False)
    diff = (exact.text_features() - text).abs().max().item()
    assert 0 < diff < 1e-3


def upstream_state(n_ctx=3, depth=3, t_n_ctx=2, width=16):
    """An upstream ``{'prompt_learner': state_dict}`` with its buffers and unused projections."""
    g = torch.Generator().manual_seed(4)
    state = {"ctx_pos": torch.randn(1, 1, n_ctx, width, generator=g),
             "ctx_neg": torch.randn(1, 1, n_ctx, width, generator=g)}
    for k in range(depth - 1):
        state[f"compound_prompts_text.{k}"] = torch.randn(t_n_ctx, width, generator=g)
        state[f"compound_prompt_projections.{k}.weight"] = torch.randn(896, width, generator=g)
        state[f"compound_prompt_projections.{k}.bias"] = torch.randn(896, generator=g)
    for s in ("pos", "neg"):
        state[f"token_prefix_{s}"] = torch.randn(1, 1, 1, width, generator=g)
        state[f"token_suffix_{s}"] = torch.randn(1, 1, 77 - 1 - n_ctx, width, generator=g)
    tokens = tokenize(state_prompt_texts(n_ctx))
    state["tokenized_prompts_pos"] = tokens[:1].reshape(1, 1, 77)
    state["tokenized_prompts_neg"] = tokens[1:].reshape(1, 1, 77)
    return {"prompt_learner": state}


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_converter_reads_upstreams_layout_safely(tmp_path, caplog, small_clip):
    ckpt = upstream_state()
    path = tmp_path / "epoch_15.pth"
    torch.save(ckpt, path)
    state = convert_upstream(str(path), 3, 3, 2)
    assert sorted(state) == ["compound_prompts_text.0", "compound_prompts_text.1", "ctx_neg",
                             "ctx_pos"]
    learner = AnomalyCLIPPromptLearner(small_clip, 3, 3, 2)
    learner.load_state_dict(state)  # strict: the converted keys are the learner's
    assert torch.equal(learner.ctx_neg, ckpt["prompt_learner"]["ctx_neg"])
    with pytest.raises(ReleasedWeightsError, match=r"missing \['compound_prompts_text.2'\].*DEPTH 4"):
        convert_upstream(str(path), 3, 4, 2)
    with pytest.raises(ReleasedWeightsError, match=r"ctx_pos has shape \[1, 1, 3, 16\]; expected "
                                                   r"\[1, 1, 4, 16\] \(N_CTX 4"):
        convert_upstream(str(path), 4, 3, 2)
    torch.save({"model": {}}, tmp_path / "other.pth")
    with pytest.raises(ReleasedWeightsError, match=r"other.pth.*expected AnomalyCLIP's checkpoint "
                                                   r"\{'prompt_learner'.*got \['model'\]"):
        convert_upstream(str(tmp_path / "other.pth"), 3, 3, 2)
    torch.save({"prompt_learner": {"ctx_pos": Exploit()}}, tmp_path / "evil.pth")
    with pytest.raises(ReleasedWeightsError, match="weights_only=True: .*GLOBAL posix.system"):
        convert_upstream(str(tmp_path / "evil.pth"), 3, 3, 2)
    out = tmp_path / "conv"
    argv = ["--checkpoint", str(path), "--output-dir", str(out), "--n_ctx", "3", "--depth", "3",
            "--t_n_ctx", "2"]
    assert convert_anomalyclip.main(argv) == 0
    saved = torch.load(out / "prompt_learner" / "model.pth.tar-15", weights_only=True)
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in state.items())
    with caplog.at_level(logging.ERROR, logger="convert_anomalyclip"):
        assert convert_anomalyclip.main(argv) == 2
    assert "prompt_learner holds files already" in caplog.text


def test_toy_step_trainable_checkpoint_and_evaluation(toy_anomaly_root, anomaly_trainer, tmp_path):
    trainer = anomaly_trainer("AnomalyCLIP", toy_anomaly_root, tmp_path, "toy_visa",
                              "DATASET.ANOMALY.CATEGORIES", "('mesh',)")
    batch = next(iter(trainer.test_loader))
    learner = trainer.model.learner
    before = {k: p.detach().clone() for k, p in learner.named_parameters()}
    terms = trainer.forward_backward(batch)
    assert set(terms) == {"loss", "image_loss", "local", "focal", "dice"}
    assert terms["loss"] == pytest.approx(terms["image_loss"] + terms["local"], rel=1e-5)
    assert [k for k, p in learner.named_parameters() if torch.equal(before[k], p)] == []
    trainer.save_model(0, str(tmp_path))
    files = sorted(f for f in os.listdir(tmp_path / "prompt_learner") if "tar" in f)
    saved = torch.load(tmp_path / "prompt_learner" / files[0], weights_only=True)
    assert sorted(saved["state_dict"]) == ["compound_prompts_text.0", "compound_prompts_text.1",
                                           "compound_prompts_text.2", "ctx_neg", "ctx_pos"]
    trainer.test()
    with open(tmp_path / "results.json") as f:
        res = json.load(f)
    assert res["trainer"] == "AnomalyCLIP" and list(res["per_category"]) == ["mesh"]
    assert 0 <= res["pixel_auroc"] <= 100 and res["map_sigma"] == 4.0


def test_bad_settings_are_named(toy_anomaly_root, anomaly_trainer, tmp_path):
    cases = [(("TRAINER.ANOMALYCLIP.FEATURES_LIST", "(1, 9)"),
              r"FEATURES_LIST \[1, 9\] has blocks \[9\].*1..4"),
             (("TRAINER.ANOMALYCLIP.DPAM_LAYER", "20"), r"DPAM_LAYER 20.*use 1..5 \(1: no DPAM\)"),
             (("TRAINER.ANOMALYCLIP.DEPTH", "9"), r"DEPTH 9.*4 text layers; use at most 4"),
             (("TRAINER.ANOMALYCLIP.FEATURE_MAP_LAYER", "(4,)"), r"FEATURE_MAP_LAYER\[0\] must index"),
             (("DATASET.NUM_SHOTS", "1"), "AnomalyCLIP is zero-shot only")]
    for opts, message in cases:
        with pytest.raises(ConfigError, match=message):
            anomaly_trainer("AnomalyCLIP", toy_anomaly_root, tmp_path, "toy_visa", *opts)


def test_benchmark_section_runs_at_tiny_shapes(benchmark, capsys):
    argv = ["--only", "anomalyclip", "--reps", "1", "--anomalyclip-layers", "1",
            "--anomalyclip-size", "42", "--anomalyclip-batch", "1"]
    assert benchmark.main(argv) == 0
    out = capsys.readouterr().out
    assert "| anomalyclip | train step | 1x3x42x42, 1 blocks of ViT-L/14 (maps from [1], DPAM in " \
           "blocks 1..1), 10 tokens" in out
    assert "saved-for-backward MB" in out and "| anomalyclip | eval batch |" in out
