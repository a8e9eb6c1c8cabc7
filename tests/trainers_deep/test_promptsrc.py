"""PromptSRC: GPA weights and loss terms against hand computations, frozen features computed once
and without prompts, GPA over epochs, exact resume, upstream configs and checkpoints."""
import json
import math
import os
import shutil
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

import trainers.promptsrc as promptsrc
from dassl_lite.clip import tokenize
from dassl_lite.config import ConfigError, apply_config_extenders, get_cfg_default, merge_from_file
from dassl_lite.engine import CheckpointError, load_checkpoint
from trainers.promptsrc import gpa_weights, promptsrc_losses, template_text_features

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs", "trainers", "PromptSRC")
# The tiny CLIP (text 32 wide, 4 layers; vision 48 wide, 3 layers): 2 + 3 tokens, depths 4 and 2.
OPTS = ["OPTIM.LR", "0.05", "TRAINER.PROMPTSRC.N_CTX_TEXT", "2", "TRAINER.PROMPTSRC.N_CTX_VISION",
        "3", "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "4", "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION",
        "2", "TRAINER.PROMPTSRC.GPA_MEAN", "2", "TRAINER.PROMPTSRC.GPA_STD", "1"]


@pytest.fixture
def src(clip_cfg, deep_clip_path, build_seeded):
    """``src(KEY, VALUE, ..., output_dir=None)``: a seeded PromptSRC trainer on the tiny CLIP."""
    return lambda *opts, output_dir=None: build_seeded(
        clip_cfg("PromptSRC", deep_clip_path, *OPTS, *opts, output_dir=output_dir))


def learned(trainer):
    return {k: v.detach().clone() for k, v in trainer.learned_tensors().items()}


# ---------------------------------------------------------------- hand computations

def test_gpa_weights_by_hand():
    # N(e; 2, 1) for e = 1..4 is proportional to exp(-1/2), 1, exp(-1/2), exp(-2).
    a, b = math.exp(-0.5), math.exp(-2.0)
    total = 1 + 2 * a + b
    assert gpa_weights(4, 2, 1) == pytest.approx([a / total, 1 / total, a / total, b / total],
                                                 rel=1e-12)
    assert gpa_weights(4, 2, 1) == pytest.approx([0.2582744, 0.4258225, 0.2582744, 0.0576288],
                                                 abs=1e-7)
    # upstream base-to-novel: mean 15, std 1 over 20 epochs; epoch 15 holds 1 / sum exp(-k^2/2)
    weights = gpa_weights(20, 15, 1)
    assert sum(weights) == pytest.approx(1.0, abs=1e-12)
    norm = sum(math.exp(-0.5 * (e - 15) ** 2) for e in range(1, 21))
    assert weights[14] == pytest.approx(1 / norm, rel=1e-12) and max(weights) == weights[14]


def test_gpa_settings_that_cannot_work_are_refused():
    with pytest.raises(ConfigError, match="GPA_STD must be > 0; got 0"):
        gpa_weights(5, 3, 0)
    with pytest.raises(ConfigError, match="GPA_MEAN=1000 with GPA_STD=1 gives every one of the 5"):
        gpa_weights(5, 1000, 1)


def test_loss_terms_by_hand():
    out = {
        "logits": torch.zeros(2, 2),  # CE = ln 2 for either label
        "zs_logits": torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]]),  # p = (3/4, 1/4), (1/2, 1/2)
        "text_features": torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        "frozen_text_features": torch.tensor([[0.6, 0.8], [0.0, 1.0]]),  # |diff| 0.4 0.8 0 0
        "image_features": torch.tensor([[1.0, 0.0]]),
        "zs_image_features": torch.tensor([[0.0, 1.0]]),  # |diff| 1 1
    }
    terms = promptsrc_losses(out, torch.tensor([0, 1]), text_weight=25, image_weight=10)
    kl = (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)) / 4  # summed, / (B * C)
    expected = {"ce": math.log(2), "l1_text": 25 * 0.3, "l1_image": 10 * 1.0, "kl": kl}
    for k, v in expected.items():
        assert terms[k].item() == pytest.approx(v, rel=1e-6), k
    assert terms["loss"].item() == pytest.approx(sum(expected.values()), rel=1e-6)


def test_frozen_text_features_are_the_template_mean(deep_clip):
    names, templates = ["red_square", "blue circle"], ["a photo of a {}.", "art of the {}."]
    with torch.no_grad():
        per_template = [deep_clip.encode_text(tokenize([t.format(n.replace("_", " "))
                                                        for n in names])) for t in templates]
    mean = torch.stack(per_template).mean(dim=0)  # unnormalised features averaged, as upstream
    expected = mean / mean.norm(dim=-1, keepdim=True)
    got = template_text_features(deep_clip, names, templates)
    assert torch.allclose(got, expected, atol=1e-6)


# ---------------------------------------------------------------- the trainer

def test_frozen_features_are_computed_once_and_without_prompts(src, monkeypatch):
    trainer = src()
    model = trainer.model
    expected = template_text_features(model.clip, trainer.dm.dataset.classnames)
    assert torch.allclose(model.frozen_text_features, expected, atol=1e-6)
    monkeypatch.setattr(promptsrc, "template_text_features",
                        lambda *a, **k: pytest.fail("template features recomputed in a step"))
    batch = next(iter(trainer.train_loader_x))
    images = batch["img"]
    trainer.set_model_mode("train")
    out = model(images, features=True)
    with torch.no_grad():
        zs_image = F.normalize(model.clip.visual(images), dim=-1)  # no prompts
        zs_logits = model.clip.logit_scale.exp() * zs_image @ expected.t()
    assert torch.allclose(out["zs_image_features"], zs_image, atol=1e-5)
    assert torch.allclose(out["zs_logits"], zs_logits, atol=1e-4)
    assert not torch.allclose(out["image_features"], zs_image, atol=1e-3)  # prompts act
    for _ in range(2):
        losses = trainer.forward_backward(batch)
    assert losses["loss"] == pytest.approx(
        losses["ce"] + losses["kl"] + losses["l1_text"] + losses["l1_image"], rel=1e-5)


def test_final_prompts_are_the_gaussian_weighted_sum(src, tmp_path, monkeypatch):
    trainer = src("OPTIM.MAX_EPOCH", "3", output_dir=tmp_path / "run")
    raw = []
    aggregate = trainer.aggregate_prompts
    monkeypatch.setattr(trainer, "aggregate_prompts",
                        lambda: (raw.append(learned(trainer)), aggregate())[1])
    trainer.train()
    weights = gpa_weights(3, 2, 1)
    assert len(raw) == 3 and not torch.equal(raw[0]["text.ctx"], raw[2]["text.ctx"])
    final = learned(trainer)
    for k, v in final.items():
        expected = sum(w * r[k] for w, r in zip(weights, raw))
        assert torch.allclose(v, expected, atol=1e-6), k
    ckpt = load_checkpoint(str(tmp_path / "run" / "VLPromptLearner" / "model.pth.tar-3"))
    for k, v in final.items():  # the last checkpoint holds the evaluated (aggregated) prompts
        assert torch.equal(ckpt["state_dict"][k], v), k


def test_resume_continues_the_aggregation_exactly(src, tmp_path):
    opts = ("OPTIM.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FREQ", "1")
    full = src(*opts, output_dir=tmp_path / "full")
    full.train()
    part = tmp_path / "part" / "VLPromptLearner"
    part.mkdir(parents=True)  # a run that stopped after epoch 2
    shutil.copy(tmp_path / "full" / "VLPromptLearner" / "model.pth.tar-2", part)
    (part / "checkpoint").write_text("model.pth.tar-2\n")
    resumed = src(*opts, output_dir=tmp_path / "part")
    torch.manual_seed(12345)
    resumed.train()
    assert resumed.start_epoch == 2
    a, b = learned(full), learned(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_the_gpa_sum_is_refused(src, tmp_path):
    opts = ("OPTIM.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FREQ", "1")
    src(*opts, "OPTIM.MAX_EPOCH", "1", output_dir=tmp_path / "one").train()
    folder = tmp_path / "one" / "VLPromptLearner"
    ckpt = load_checkpoint(str(folder / "model.pth.tar-1"))
    del ckpt["gpa"]
    torch.save(ckpt, folder / "model.pth.tar-1")
    with pytest.raises(CheckpointError, match="Cannot resume PromptSRC at epoch 1: the "
                                              "checkpoint has no GPA running sum"):
        src(*opts, output_dir=tmp_path / "one").train()


def test_text_prompts_are_required(src):
    with pytest.raises(ConfigError, match="PROMPT_DEPTH_TEXT must be >= 1 .*got 0"):
        src("TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "0")


# ---------------------------------------------------------------- upstream compatibility

def merged(name):
    cfg = apply_config_extenders(get_cfg_default())
    merge_from_file(cfg, os.path.join(CONFIGS, name))
    return cfg


def test_defaults_are_upstream():
    cfg = apply_config_extenders(get_cfg_default())
    assert dict(cfg.TRAINER.PROMPTSRC) == {
        "N_CTX_VISION": 4, "N_CTX_TEXT": 4, "CTX_INIT": "a photo of a", "PREC": "fp16",
        "PROMPT_DEPTH_VISION": 9, "PROMPT_DEPTH_TEXT": 9, "TEXT_LOSS_WEIGHT": 25,
        "IMAGE_LOSS_WEIGHT": 10, "GPA_MEAN": 15, "GPA_STD": 1}


@pytest.mark.parametrize("name, epochs, depth, mean, std", [
    ("vit_b16_c2_ep20_batch4_4+4ctx.yaml", 20, 9, 15, 1),
    ("vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml", 20, 3, 6, 10),
    ("vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml", 50, 9, 30, 30),
])
def test_upstream_yamls_merge_with_upstream_values(name, epochs, depth, mean, std):
    cfg = merged(name)
    assert (cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.DATALOADER.TRAIN_X.BATCH_SIZE) == (0.0025,
                                                                                      epochs, 4)
    c = cfg.TRAINER.PROMPTSRC
    assert (c.N_CTX_TEXT, c.N_CTX_VISION, c.PROMPT_DEPTH_TEXT, c.PROMPT_DEPTH_VISION) == (
        4, 4, depth, depth)
    assert (c.TEXT_LOSS_WEIGHT, c.IMAGE_LOSS_WEIGHT, c.GPA_MEAN, c.GPA_STD) == (25, 10, mean, std)
    gpa_weights(cfg.OPTIM.MAX_EPOCH, c.GPA_MEAN, c.GPA_STD)  # a valid schedule


def test_toy_config_fits_the_toy_clip():
    cfg = merged("toy.yaml")
    c = cfg.TRAINER.PROMPTSRC
    assert cfg.MODEL.BACKBONE.NAME == "ToyCLIP" and c.PREC == "fp32"
    assert max(c.PROMPT_DEPTH_TEXT, c.PROMPT_DEPTH_VISION) <= 4  # ToyCLIP: 4 layers each
    assert 1 <= c.GPA_MEAN <= cfg.OPTIM.MAX_EPOCH


def test_upstream_checkpoint_loads(src, tmp_path, upstream):
    """A ``VLPromptLearner/`` file in upstream's layout: the whole CustomCLIP, including the
    frozen copy of the image encoder (``prompt_learner.ZS_image_encoder.*``)."""
    trainer = src()
    g = torch.Generator().manual_seed(7)
    state = OrderedDict([("prompt_learner.ctx", torch.randn(2, 32, generator=g))])
    for i in (1, 2, 3):
        state[f"text_encoder.transformer.resblocks.{i}.VPT_shallow"] = torch.randn(
            2, 32, generator=g)
    state["image_encoder.VPT"] = torch.randn(3, 48, generator=g)
    state["image_encoder.transformer.resblocks.1.VPT_shallow"] = torch.randn(3, 48, generator=g)
    state = OrderedDict((k, v.half()) for k, v in state.items())
    learned_state = dict(state)
    clip = trainer.model.clip
    state.update(upstream.frozen(clip))
    for k, v in clip.visual.state_dict().items():
        state[f"prompt_learner.ZS_image_encoder.{k}"] = v.half()
    trainer.load_model(upstream.write(tmp_path / "up", "VLPromptLearner", state, epoch=20),
                       epoch=20)
    pl = trainer.model.prompt_learner
    assert torch.equal(pl.text.ctx, learned_state["prompt_learner.ctx"].float())
    for i in (1, 2, 3):
        key = f"text_encoder.transformer.resblocks.{i}.VPT_shallow"
        assert torch.equal(pl.text.deep[i - 1], learned_state[key].float())
    assert torch.equal(pl.vision.ctx, learned_state["image_encoder.VPT"].float())
    assert torch.equal(pl.vision.deep[0], learned_state[
        "image_encoder.transformer.resblocks.1.VPT_shallow"].float())
    assert trainer.model_epoch == 20 and 0 <= trainer.test() <= 100


@pytest.mark.slow
def test_upstream_directory_evaluates_through_train_py(src, tiny_root, deep_clip_path, tmp_path,
                                                       upstream):
    """``tools/train.py --eval-only --model-dir`` with upstream's base-to-novel YAML on a
    ``VLPromptLearner/`` directory in upstream's layout gives our evaluation of those prompts."""
    trainer = src(output_dir=tmp_path / "ours")
    expected = trainer.test()
    pl, clip = trainer.model.prompt_learner, trainer.model.clip
    state = OrderedDict([("prompt_learner.ctx", pl.text.ctx), ("image_encoder.VPT", pl.vision.ctx)])
    for side, deep in (("text_encoder", pl.text.deep), ("image_encoder", pl.vision.deep)):
        for i, p in enumerate(deep, start=1):
            state[f"{side}.transformer.resblocks.{i}.VPT_shallow"] = p
    state = OrderedDict((k, v.detach().clone()) for k, v in state.items())
    state.update(upstream.frozen(clip))
    state.update((f"prompt_learner.ZS_image_encoder.{k}", v.half())
                 for k, v in clip.visual.state_dict().items())
    model_dir = upstream.write(tmp_path / "up", "VLPromptLearner", state, epoch=20)
    cfg, out = trainer.cfg, tmp_path / "eval"
    cmd = [sys.executable, os.path.join(REPO, "tools", "train.py"),
           "--import", os.path.join(REPO, "tests", "fixtures", "tiny_world.py"),
           "--trainer", "PromptSRC", "--root", tiny_root, "--output-dir", str(out), "--seed", "1",
           "--dataset-config-file", os.path.join(REPO, "tests", "fixtures", "tiny_dataset.yaml"),
           "--config-file", os.path.join(CONFIGS, "vit_b16_c2_ep20_batch4_4+4ctx.yaml"),
           "--eval-only", "--model-dir", model_dir, "--load-epoch", "20", *OPTS,
           "INPUT.SIZE", "(32, 32)", "INPUT.INTERPOLATION", cfg.INPUT.INTERPOLATION,
           "INPUT.PIXEL_MEAN", str(list(cfg.INPUT.PIXEL_MEAN)),
           "INPUT.PIXEL_STD", str(list(cfg.INPUT.PIXEL_STD)), "MODEL.BACKBONE.NAME",
           deep_clip_path, "TRAINER.PROMPTSRC.PREC", "fp32", "DATALOADER.NUM_WORKERS", "0"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out / "results.json") as f:
        results = json.load(f)
    assert (results["accuracy"], results["epoch"]) == (expected, 20)
    assert "ignoring" in (out / "log.txt").read_text()  # the frozen upstream keys were dropped
