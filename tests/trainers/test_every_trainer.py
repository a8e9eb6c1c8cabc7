"""Every registered trainer, on the toy world with the shipped ToyCLIP, in fp32 and bf16: two
training steps that move every trainable tensor (trainers with nothing to train skip them), then
one evaluation on the base test split that writes results.json. Trainers that fit a head instead
of training (FittedCLIPTrainer: linear probe, Tip-Adapter) run their fit, which must fill every
fitted tensor."""
import itertools

import pytest
import torch

import trainers  # noqa: F401  (registers the trainers)
from dassl_lite.registry import TRAINER_REGISTRY
from trainers.fitted import FittedCLIPTrainer

NAMES = sorted(TRAINER_REGISTRY.names())


def test_the_walk_covers_every_method_of_the_papers():
    assert {"ZeroshotCLIP", "ZeroshotCLIP2", "CoOp", "CoCoOp", "MaPLe", "IVLP", "VPT",
            "VPTDeep"} <= set(NAMES)


def test_the_walk_covers_the_adapters_and_probes():
    assert {"LinearProbeCLIP", "CLIPAdapter", "TipAdapter", "TipAdapterF", "CLIPLoRA"} <= set(NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("prec", ["fp32", "bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_two_steps_and_an_evaluation(toy_shapes_root, toy_trainer, run_accuracy, tmp_path, name,
                                     prec):
    key = TRAINER_REGISTRY.get(name).precision_key
    trainer = toy_trainer(name, toy_shapes_root, tmp_path, "base", key, prec,
                          "DATASET.NUM_SHOTS", "2")  # 64 images: two batches of 32
    assert trainer.precision.name == prec
    params = {k: p for k, p in trainer.model.named_parameters() if p.requires_grad}
    if params:  # a prompt learner: two steps move every trainable tensor, kept in fp32
        before = {k: p.detach().clone() for k, p in params.items()}
        trainer.set_model_mode("train")
        # a second pass when the loader holds one batch (TipAdapterF's toy batch is 256)
        batches = itertools.chain.from_iterable(itertools.repeat(trainer.train_loader_x))
        for _ in range(2):
            out = trainer.forward_backward(next(batches))
            assert torch.isfinite(torch.tensor(out["loss"])), out
        assert all(p.dtype == torch.float32 for p in params.values())
        assert [k for k, p in params.items() if torch.equal(before[k], p)] == []
    elif isinstance(trainer, FittedCLIPTrainer):  # fitted, not trained: the fit fills the head
        before = trainer.model_state_dict(trainer.model_name)
        trainer.fit()
        after = trainer.model_state_dict(trainer.model_name)
        assert sorted(after) == sorted(before)
        assert [k for k, v in after.items() if v.shape == before[k].shape and
                torch.equal(v, before[k])] == []
        assert all(torch.isfinite(v.float()).all() for v in after.values())
    else:
        assert name.startswith("ZeroshotCLIP"), f"{name} has no trainable parameters"
    accuracy = trainer.test()
    assert accuracy == run_accuracy(tmp_path)
    assert 100 / 32 < accuracy <= 100  # above chance among the 32 base classes
