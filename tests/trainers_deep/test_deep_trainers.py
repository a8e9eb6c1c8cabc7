"""MaPLe, IVLP, VPT and VPTDeep through the engine on TinyColors with a tiny random CLIP."""
import json

import pytest
import torch


VARIANTS = {
    "MaPLe": ("MaPLe",),
    "MaPLe-shallow": ("MaPLe", "TRAINER.MAPLE.PROMPT_DEPTH", "1"),
    "IVLP": ("IVLP",),
    "IVLP-language-only": ("IVLP", "TRAINER.IVLP.PROMPT_DEPTH_VISION", "0",
                           "TRAINER.IVLP.N_CTX_VISION", "0"),
    "IVLP-vision-only": ("IVLP", "TRAINER.IVLP.PROMPT_DEPTH_TEXT", "0"),
    "VPT-shallow": ("VPT", "TRAINER.VPT.PROMPT_DEPTH_VISION", "1"),
    "VPT": ("VPT",),
    "VPTDeep": ("VPTDeep",),
    "VPTDeep-linear": ("VPTDeep", "TRAINER.VPTDEEP.HEAD", "linear"),
    "VPTDeep-project": ("VPTDeep", "TRAINER.VPTDEEP.PROJECT", "16", "TRAINER.VPTDEEP.DEPTH", "2"),
}


def results(trainer):
    with open(f"{trainer.output_dir}/results.json") as f:
        return json.load(f)


def n_trainable(trainer):
    return sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_train_and_evaluate(build, variant):
    name, *opts = VARIANTS[variant]
    trainer = build(name, *opts)
    learner = trainer.get_model_names()
    before = {k: v.detach().clone() for k, v in trainer.model.prompt_learner.named_parameters()}
    trainer.train()
    res = results(trainer)
    assert res["trainer"] == name and res["num_samples"] == 16 and 0 <= res["accuracy"] <= 100
    assert res["epoch"] == 1 and res["precision"] == "fp32" and len(learner) == 1
    after = dict(trainer.model.prompt_learner.named_parameters())
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == list(before)  # every learned tensor was updated


def mlp(d_in, d_out):
    return d_in * d_out + d_out


# Formulas from the configs (see each trainer's docstring); d = dims of the tiny CLIP.
COUNTS = {
    # MaPLe n_ctx=2, J=3: n*d_t + (d_t*d_v + d_v) + (J-1)*n*d_t + (J-1)*(d_t*d_v + d_v)
    "MaPLe": lambda d: 2 * d.d_t + mlp(d.d_t, d.d_v) + 2 * 2 * d.d_t + 2 * mlp(d.d_t, d.d_v),
    "MaPLe-shallow": lambda d: 2 * d.d_t + mlp(d.d_t, d.d_v),
    # IVLP: n_t*d_t*J_t + n_v*d_v*J_v with n_t=2, J_t=4, n_v=3, J_v=2
    "IVLP": lambda d: 2 * d.d_t * 4 + 3 * d.d_v * 2,
    "IVLP-language-only": lambda d: 2 * d.d_t * 4,
    "IVLP-vision-only": lambda d: 3 * d.d_v * 2,
    # VPT: n_v*d_v*J
    "VPT-shallow": lambda d: 3 * d.d_v * 1,
    "VPT": lambda d: 3 * d.d_v * 2,
    # VPTDeep: n*d_v*depth (-1 = all 3 layers) (+ linear head) (PROJECT P: n*P*depth + P->d_v)
    "VPTDeep": lambda d: 3 * d.d_v * 3,
    "VPTDeep-linear": lambda d: 3 * d.d_v * 3 + mlp(d.embed, 4),
    "VPTDeep-project": lambda d: 3 * 16 * 2 + mlp(16, d.d_v),
}


@pytest.mark.parametrize("variant", list(COUNTS))
def test_trainable_parameter_count_follows_the_formula(build, dims, variant):
    name, *opts = VARIANTS[variant]
    trainer = build(name, *opts)
    expected = COUNTS[variant](dims)
    assert n_trainable(trainer) == expected
    learner = trainer.model.prompt_learner
    assert sum(p.numel() for p in learner.parameters() if p.requires_grad) == expected
    assert all(p.dtype == torch.float32 for p in learner.parameters())


NAMES = ["MaPLe", "IVLP", "VPT", "VPTDeep"]


@pytest.mark.parametrize("variant, expected", [
    ("MaPLe", 1), ("IVLP", 1), ("IVLP-vision-only", 0), ("VPT", 0), ("VPTDeep", 0),
])
def test_text_encoder_calls_per_evaluation(build, variant, expected):
    """Learned text prompts: encoded once per evaluation (16 images in 2 batches); fixed
    hand-crafted prompts: encoded once when the model is built, never during evaluation."""
    name, *opts = VARIANTS[variant]
    trainer = build(name, *opts)
    model = trainer.model
    calls = []
    encode = model.encode_text
    model.encode_text = lambda *a, **k: calls.append(1) or encode(*a, **k)
    trainer.test()
    assert len(calls) == expected and model.text_cache is None


@pytest.mark.parametrize("prec", ["bf16", "amp"])
@pytest.mark.parametrize("name", NAMES)
def test_reduced_precision_train_step_on_cpu(build, name, prec):
    trainer = build(name, f"TRAINER.{name.upper()}.PREC", prec)
    learner = trainer.model.prompt_learner
    before = {k: v.detach().clone() for k, v in learner.named_parameters()}
    out = trainer.forward_backward(next(iter(trainer.train_loader_x)))
    assert torch.isfinite(torch.tensor(out["loss"])) and 0 <= out["acc"] <= 100
    assert all(p.dtype == torch.float32 for p in learner.parameters())
    assert all(not torch.equal(before[k], p) for k, p in learner.named_parameters())
    frozen = torch.bfloat16 if prec == "bf16" else torch.float32
    assert trainer.model.clip.dtype == frozen and trainer.precision.name == prec


def cpu_replicas(module, n=2):
    """``nn.parallel.replicate`` (what DataParallel does each step) with the CUDA broadcast
    swapped for differentiable CPU copies."""
    import sys
    from unittest import mock

    replicate = sys.modules["torch.nn.parallel.replicate"]

    def broadcast(tensors, devices, detach=False):
        return [[t.detach().clone() if detach else t.clone() for t in tensors] for _ in devices]

    with mock.patch.object(replicate, "_broadcast_coalesced_reshape", broadcast):
        return replicate.replicate(module, list(range(n)))


@pytest.mark.parametrize("variant", ["MaPLe", "IVLP", "VPT", "VPTDeep-linear"])
def test_data_parallel_replicas_keep_every_prompt(build, variant):
    name, *opts = VARIANTS[variant]
    trainer = build(name, *opts)
    model = trainer.model
    assert not any(isinstance(m, torch.nn.ParameterList) for m in model.modules())
    learner = model.prompt_learner
    trainable = {k for k, p in learner.named_parameters() if p.requires_grad}
    assert trainable == set(learner.state_dict())  # every learned tensor is a registered parameter
    trainer.set_model_mode("eval")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(images)
    for replica in cpu_replicas(model):
        out = replica(images)
        torch.testing.assert_close(out, reference, rtol=0, atol=0)
        out.sum().backward()
    assert all(learner.get_parameter(k).grad is not None for k in trainable)
