"""ZeroshotCLIP, CoOp and CoCoOp through the engine on TinyColors with a tiny random CLIP."""
import json
import logging

import pytest
import torch

from dassl_lite.config import ConfigError


def results(trainer):
    with open(f"{trainer.output_dir}/results.json") as f:
        return json.load(f)


@pytest.mark.parametrize("name", ["ZeroshotCLIP", "ZeroshotCLIP2", "CoOp", "CoCoOp"])
def test_train_and_evaluate(build, name):
    trainer = build(name)
    trainer.train()
    res = results(trainer)
    assert res["trainer"] == name and res["num_samples"] == 16 and 0 <= res["accuracy"] <= 100
    assert res["precision"] == "fp32"


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_coop_csc_positions_train(build, position):
    trainer = build("CoOp", "TRAINER.COOP.CSC", "True",
                    "TRAINER.COOP.CLASS_TOKEN_POSITION", position)
    before = trainer.model.prompt_learner.ctx.detach().clone()
    trainer.train()
    after = trainer.model.prompt_learner.ctx
    assert after.shape == (4, 4, 32) and not torch.equal(before, after)
    assert trainer.model.prompt_learner.tokenized_prompts.shape[1] == 8  # SOS 4xX name . EOT


def n_trainable(trainer):
    return sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)


def test_trainable_parameter_counts(build):
    n_ctx, dim, n_cls, vis = 4, 32, 4, 32
    assert n_trainable(build("CoOp")) == n_ctx * dim
    assert n_trainable(build("CoOp", "TRAINER.COOP.CSC", "True")) == n_cls * n_ctx * dim
    meta_net = vis * (vis // 16) + vis // 16 + (vis // 16) * dim + dim
    assert n_trainable(build("CoCoOp")) == n_ctx * dim + meta_net
    zs = build("ZeroshotCLIP")
    assert n_trainable(zs) == 0 and zs.get_model_names() == []


@pytest.mark.parametrize("name, expected", [("ZeroshotCLIP", 0), ("CoOp", 1), ("CoCoOp", 2)])
def test_text_encoder_calls_per_evaluation(build, name, expected):
    """Class text features: computed at build (zero-shot), once per evaluation (CoOp), or for
    each test batch (CoCoOp: they depend on the image; 16 test images in batches of 8)."""
    trainer = build(name)
    model = trainer.model
    calls = []
    encode = model.encode_text
    model.encode_text = lambda *a, **k: calls.append(1) or encode(*a, **k)
    trainer.test()
    assert len(calls) == expected
    assert model.text_cache is None or name == "ZeroshotCLIP"


def test_coop_cache_gives_same_logits(build):
    trainer = build("CoOp")
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        fresh = trainer.model(images)
        trainer.before_test()
        cached = trainer.model(images)
        trainer.after_test()
    assert torch.equal(fresh, cached) and trainer.model.text_cache is None


@pytest.mark.parametrize("prec", ["fp32", "bf16", "amp"])
@pytest.mark.parametrize("name", ["CoOp", "CoCoOp"])
def test_precisions_train_on_cpu(build, name, prec):
    trainer = build(name, f"TRAINER.{name.upper()}.PREC", prec)
    batch = next(iter(trainer.train_loader_x))
    before = trainer.model.prompt_learner.ctx.detach().clone()
    out = trainer.forward_backward(batch)
    assert torch.isfinite(torch.tensor(out["loss"])) and 0 <= out["acc"] <= 100
    learner = trainer.model.prompt_learner
    assert all(p.dtype == torch.float32 for p in learner.parameters())
    assert not torch.equal(before, learner.ctx)
    frozen = {"fp32": torch.float32, "bf16": torch.bfloat16, "amp": torch.float32}[prec]
    assert trainer.model.clip.dtype == frozen == trainer.precision.model_dtype
    assert trainer.precision.name == prec


def test_fp16_on_cpu_warns_and_falls_back(build, caplog):
    caplog.set_level(logging.WARNING)
    trainer = build("CoOp", "TRAINER.COOP.PREC", "fp16")
    assert "TRAINER.COOP.PREC=fp16 needs a GPU; running in fp32 on cpu" in caplog.text
    assert trainer.precision.name == "fp32" and trainer.model.clip.dtype == torch.float32


def test_input_size_must_match_backbone(build, tiny_clip_path):
    with pytest.raises(ConfigError) as e:
        build("CoOp", "INPUT.SIZE", "(224, 224)")
    assert str(e.value) == (
        f"INPUT.SIZE (224, 224) does not match the input resolution of backbone "
        f"{tiny_clip_path!r} (32, 32); set INPUT.SIZE (32, 32)")


def test_bad_class_token_position_named(trainer_cfg):
    from dassl_lite.engine import build_trainer

    with pytest.raises(ConfigError, match="TRAINER.COOP.CLASS_TOKEN_POSITION must be one of "
                                          "end, middle, front; got 'back'"):
        build_trainer(trainer_cfg("CoOp", "TRAINER.COOP.CLASS_TOKEN_POSITION", "back"))


def test_zeroshot_load_model_is_a_no_op(build):
    trainer = build("ZeroshotCLIP")
    trainer.load_model("")
    trainer.load_model("/nonexistent", epoch=3)
    assert trainer.get_model_names() == []


def test_zero_shot_text_is_encoded_once_at_build(build, monkeypatch):
    from trainers.prompting import PromptedCLIP

    calls = []
    encode = PromptedCLIP.encode_text
    monkeypatch.setattr(PromptedCLIP, "encode_text",
                        lambda self, *a, **k: calls.append(a[0].shape[0]) or encode(self, *a, **k))
    trainer = build("ZeroshotCLIP2")
    assert calls == [8 * 4]  # 7 ensemble templates + the dataset's, 4 classes, one call
    trainer.test()
    trainer.test()
    assert calls == [8 * 4]
