"""AdaCLIP: the maths of caoyunkang/AdaCLIP on small cases (its encoder prompting, HSF, scores and
loss lines restated here, no upstream code needed), the safe converter, and one toy run."""
import importlib.util
import json
import logging
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dassl_lite.clip.model import CLIP, CLIPConfig
from dassl_lite.engine.anomaly_core import ReleasedWeightsError
from trainers.anomaly.adaclip import convert_upstream
from trainers.anomaly.adaclip_model import (AdaCLIPLearner, AdaCLIPModel, adaclip_loss,
                                            adaclip_sentences, hybrid_semantic_fusion)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    "convert_adaclip", os.path.join(REPO, "tools", "convert_adaclip.py"))
convert_adaclip = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convert_adaclip)

L, DEPTH = 2, 3


def tiny_model(use_hsf=False, k=2):
    torch.manual_seed(0)
    clip = CLIP(CLIPConfig(embed_dim=16, image_resolution=32, vision_layers=4, vision_width=24,
                           vision_patch_size=8, vision_heads=2, context_length=77, vocab_size=49408,
                           transformer_width=20, transformer_heads=2, transformer_layers=4)).eval()
    clip.requires_grad_(False)
    learner = AdaCLIPLearner(24, 20, 16, 2, L, DEPTH, "VL", "SD")
    return AdaCLIPModel(clip, learner, [2, 4], use_hsf, k)


def manual_forward(model, images, category):
    """Upstream's PromptLayer / encode_image / encode_text / visual_text_similarity, restated."""
    clip, lr = model.clip, model.learner
    with torch.no_grad():
        feat = clip.visual.forward_features(images, ()).pooled
    dyn_v = torch.stack([h(feat) for h in lr.dynamic_visual_prompt_generator.head], 1)
    dyn_t = torch.stack([h(feat) for h in lr.dynamic_text_prompt_generator.head], 1)
    v = clip.visual
    x = torch.cat([v.ln_pre(v.embed(images)), dyn_v + lr.visual_prompter.static_prompts[0]], 1)
    tokens = []
    for i, block in enumerate(v.transformer.resblocks):
        if 0 < i < DEPTH:  # replace the last L (prompt) tokens
            x = torch.cat([x[:, :-L], dyn_v + lr.visual_prompter.static_prompts[i]], 1)
        x = block(x)
        if i + 1 in (2, 4):
            tokens.append(x[:, :-L])
    pooled = v.ln_post(x[:, 0]) @ v.proj
    from dassl_lite.clip import tokenize
    states = []
    for sentences in adaclip_sentences(category):
        ids = tokenize(sentences)
        t = clip.token_embedding(ids) + clip.positional_embedding
        for i, block in enumerate(clip.transformer.resblocks):
            if 0 < i < DEPTH:  # positions 1 .. L after SOT; layer 0 sees the sentence unchanged
                ctx = (dyn_t[0] + lr.text_prompter.static_prompts[i]).expand(t.shape[0], -1, -1)
                t = torch.cat([t[:, :1], ctx, t[:, 1 + L:]], 1)
            t = block(t)
        f = clip.ln_final(t)[torch.arange(len(sentences)), ids.argmax(-1)] @ clip.text_projection
        m = F.normalize(f, dim=-1).mean(0)
        states.append(m / m.norm())
    text = torch.stack(states, 1)[None]
    patches = [F.normalize(h(t[:, 1:]), dim=-1) for h, t in zip(lr.patch_token_layer.head, tokens)]
    cls = F.normalize(lr.cls_token_layer.head[0](pooled), dim=-1)
    return patches, cls, text


def test_hybrid_prompts_in_both_encoders_match_the_restated_upstream_forward():
    model = tiny_model()
    images = torch.randn(1, 3, 32, 32)
    patches, cls, text = manual_forward(model, images, "metal-nut")
    maps, score = model(images, ["metal-nut"], aggregation=False)
    logits = [100 * p @ text for p in patches]
    want = [torch.softmax(F.interpolate(lg.permute(0, 2, 1).reshape(1, 2, 4, 4), size=(32, 32),
                                        mode="bilinear", align_corners=True), 1) for lg in logits]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(maps, want))
    assert torch.allclose(score, torch.softmax(100 * cls @ text[0], -1), atol=1e-5)
    amap, prob = model(images, ["metal-nut"], aggregation=True)
    mean = torch.softmax(torch.stack([F.interpolate(lg.permute(0, 2, 1).reshape(1, 2, 4, 4),
                                                    size=(32, 32), mode="bilinear",
                                                    align_corners=True) for lg in logits]).mean(0), 1)
    assert torch.allclose(amap, mean[:, 1], atol=1e-5) and torch.allclose(prob, score[:, 1])
    # every trainable tensor gets a gradient except the layer-0 text prompt (never used upstream)
    adaclip_loss(maps, score, torch.zeros(1, 1, 32, 32), torch.tensor([0]))["loss"].backward()
    no_grad = [n for n, p in model.learner.named_parameters() if p.grad is None]
    assert no_grad == ["text_prompter.static_prompts.0"]
    assert sorted(model.learner.state_dict())[:3] == [
        "cls_token_layer.head.0.bias", "cls_token_layer.head.0.weight",
        "dynamic_text_prompt_generator.head.0.bias"]
    # each image uses its own dynamic prompts in the text encoder (upstream: batch 1 only)
    two = torch.cat([images, torch.randn(1, 3, 32, 32)])
    maps2, score2 = model(two, ["metal-nut", "pcb1"], aggregation=False)
    assert torch.allclose(score2[:1], score, atol=1e-5)
    assert torch.allclose(maps2[0][:1], maps[0], atol=1e-5)


def test_hsf_is_the_mean_of_cluster_centres_of_the_most_abnormal_patches():
    torch.manual_seed(1)
    tokens = [F.normalize(torch.randn(1, 16, 4), dim=-1) for _ in range(2)]
    logits = [torch.randn(1, 16, 2) for _ in range(2)]
    prob = torch.softmax(torch.stack(logits, 1).mean(1), 2)[0, :, 1]
    top = torch.topk(prob, 5).indices  # 5 K patches for K = 1
    want = F.normalize(torch.cat([t[0, top] for t in tokens]).mean(0), dim=0)
    assert torch.allclose(hybrid_semantic_fusion(tokens, logits, 1)[0], want, atol=1e-6)
    np.random.seed(0)
    two = hybrid_semantic_fusion(tokens, logits, 2)[0]  # the mean of the 2 centres, not of tokens
    assert two.norm().item() == pytest.approx(1.0) and not torch.allclose(two, want, atol=1e-3)
    with pytest.raises(ValueError, match="K_CLUSTERS 20 exceeds the 16 patch tokens"):
        hybrid_semantic_fusion(tokens, logits, 20)


def test_loss_terms_are_upstreams_including_dice_over_rows_at_batch_one():
    torch.manual_seed(2)
    maps = [torch.softmax(torch.randn(1, 2, 4, 4), 1) for _ in range(2)]
    score = torch.tensor([[0.3, 0.7]])
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, 1:3, 1:3] = 1
    terms = adaclip_loss(maps, score, mask, torch.tensor([1]))
    # focal of the image probabilities: p_t = 0.7 (1 - 1e-5) + 0.3e-5 + 1e-5
    pt = 0.7 * (1 - 1e-5) + 0.3 * 1e-5 + 1e-5
    assert terms["cls"].item() == pytest.approx(-(1 - pt) ** 2 * np.log(pt), rel=1e-5)
    gt = mask[0, 0]
    rows = sum(1 - ((2 * (m[0, 1] * gt).sum(1) + 1) / (m[0, 1].sum(1) + gt.sum(1) + 1)).mean()
               for m in maps)  # upstream gt.squeeze() -> [H, W]: BinaryDiceLoss's N is H
    assert terms["dice_abnormal"].item() == pytest.approx(rows.item(), rel=1e-6)
    whole = sum(1 - (2 * (m[0, 1] * gt).sum() + 1) / (m[0, 1].sum() + gt.sum() + 1) for m in maps)
    assert abs(whole.item() - rows.item()) > 1e-3
    assert terms["loss"].item() == pytest.approx(sum(terms[k].item() for k in (
        "cls", "focal", "dice_abnormal", "dice_normal")), rel=1e-6)


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_converter_reads_upstreams_layout_safely(tmp_path, caplog):
    learner = AdaCLIPLearner(24, 20, 16, 4, 5, 4, "VL", "SD")
    path = tmp_path / "pretrained_mvtec_colondb.pth"
    torch.save({f"clip_model.{k}": v for k, v in learner.state_dict().items()}, path)
    expected = {k: v.shape for k, v in learner.state_dict().items()}
    state = convert_upstream(str(path), expected)
    assert len(state) == 38 and all(torch.equal(state[k], v)
                                    for k, v in learner.state_dict().items())
    fewer = AdaCLIPLearner(24, 20, 16, 4, 5, 3, "VL", "SD")
    with pytest.raises(ReleasedWeightsError, match=r"unexpected \['clip_model.text_prompter."
                                                   r"static_prompts.3'"):
        convert_upstream(str(path), {k: v.shape for k, v in fewer.state_dict().items()})
    wide = AdaCLIPLearner(32, 20, 16, 4, 5, 4, "VL", "SD")
    with pytest.raises(ReleasedWeightsError, match=r"visual_prompter.static_prompts.0 has shape "
                                                   r"\[5, 24\]; this config expects \[5, 32\]"):
        convert_upstream(str(path), {k: v.shape for k, v in wide.state_dict().items()})
    torch.save({"clip_model.x": Exploit()}, tmp_path / "evil.pth")
    with pytest.raises(ReleasedWeightsError, match="weights_only=True: .*GLOBAL posix.system"):
        convert_upstream(str(tmp_path / "evil.pth"), expected)
    out = tmp_path / "conv"
    argv = ["--checkpoint", str(path), "--output-dir", str(out), "--vision-width", "24",
            "--text-width", "20", "--embed-dim", "16"]
    assert convert_adaclip.main(argv) == 0
    saved = torch.load(out / "AdaCLIP" / "model.pth.tar-5", weights_only=True)
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in learner.state_dict().items())
    with caplog.at_level(logging.ERROR, logger="convert_adaclip"):
        assert convert_adaclip.main(argv) == 2
        assert convert_adaclip.main(["--checkpoint", str(tmp_path / "no.pth"),
                                     "--output-dir", str(tmp_path / "o2")]) == 2
    assert "AdaCLIP holds files already" in caplog.text
    assert "No released AdaCLIP weights at" in caplog.text


def test_toy_step_trainable_only_checkpoint_and_evaluation(toy_anomaly_root, anomaly_trainer,
                                                           tmp_path):
    trainer = anomaly_trainer("AdaCLIP", toy_anomaly_root, tmp_path, "toy_visa",
                              "DATASET.ANOMALY.CATEGORIES", "('mesh',)")
    batch = next(iter(trainer.train_loader_x))
    assert batch["img"].shape[0] == 1  # upstream's batch size
    before = [p.detach().clone() for p in trainer.model.learner.parameters()]
    terms = trainer.forward_backward(batch)
    assert set(terms) == {"loss", "cls", "focal", "dice_abnormal", "dice_normal"}
    assert np.isfinite(terms["loss"])
    changed = [not torch.equal(a, b) for a, b in zip(before, trainer.model.learner.parameters())]
    assert sum(changed) == len(changed) - 1  # all but the unused layer-0 text prompt
    trainer.save_model(0, str(tmp_path))
    files = os.listdir(tmp_path / "AdaCLIP")
    saved = torch.load(tmp_path / "AdaCLIP" / sorted(f for f in files if "tar" in f)[0],
                       weights_only=True)
    frozen = "text_prompter.static_prompts.0"  # never used (as upstream), so frozen here
    assert not trainer.model.learner.text_prompter.static_prompts[0].requires_grad
    assert sorted(saved["state_dict"]) == sorted(
        k for k in trainer.model.learner.state_dict() if k != frozen)
    trainer.test()
    with open(tmp_path / "results.json") as f:
        res = json.load(f)
    assert res["trainer"] == "AdaCLIP" and list(res["per_category"]) == ["mesh"]
    assert 0 <= res["pixel_auroc"] <= 100


def test_bad_settings_are_named(toy_anomaly_root, anomaly_trainer, tmp_path):
    from dassl_lite.config import ConfigError

    with pytest.raises(ConfigError, match=r"AUX_DATASETS \['colondb'\]: \['colondb'\] not "
                                          r"available in dassl_lite.*ColonDB"):
        anomaly_trainer("AdaCLIP", toy_anomaly_root, tmp_path, "toy_visa",
                        "TRAINER.ADACLIP.AUX_DATASETS", "('colondb',)").before_train()
    with pytest.raises(ConfigError, match="PROMPTING_TYPE 'X': expected one of"):
        anomaly_trainer("AdaCLIP", toy_anomaly_root, tmp_path, "toy_visa",
                        "TRAINER.ADACLIP.PROMPTING_TYPE", "X")
    with pytest.raises(ConfigError, match="zero-shot only.*NUM_SHOTS 1"):
        anomaly_trainer("AdaCLIP", toy_anomaly_root, tmp_path, "toy_visa",
                        "DATASET.NUM_SHOTS", "1")


def test_gelu_upstream_gives_both_encoders_exact_gelu(toy_anomaly_root, anomaly_trainer, tmp_path):
    """Upstream builds CLIP(**open_clip json) without quick_gelu: exact GELU in both encoders
    (the default); toy.yaml keeps ToyCLIP's QuickGELU; anything else is refused by name."""
    from dassl_lite.clip import ResidualAttentionBlock
    from dassl_lite.config import ConfigError

    def activations(trainer):
        return {type(b.mlp.gelu).__name__ for b in trainer.clip.modules()
                if isinstance(b, ResidualAttentionBlock)}

    cats = ("DATASET.ANOMALY.CATEGORIES", "('mesh',)")
    toy = anomaly_trainer("AdaCLIP", toy_anomaly_root, tmp_path / "toy", "toy_visa", *cats)
    assert activations(toy) == {"QuickGELU"}
    up = anomaly_trainer("AdaCLIP", toy_anomaly_root, tmp_path / "up", "toy_visa", *cats,
                         "TRAINER.ADACLIP.GELU", "upstream")
    assert activations(up) == {"GELU"}
    with pytest.raises(ConfigError, match="TRAINER.ADACLIP.GELU must be 'upstream' or "
                                          "'backbone'; got 'quick'"):
        anomaly_trainer("AdaCLIP", toy_anomaly_root, tmp_path / "bad", "toy_visa", *cats,
                        "TRAINER.ADACLIP.GELU", "quick")
