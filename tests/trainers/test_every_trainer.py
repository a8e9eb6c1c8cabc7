"""Every registered trainer, on the toy world of its task family with the shipped ToyCLIP, in
fp32 and bf16: two training steps that move every trainable tensor (trainers with nothing to
train skip them), then one evaluation that writes results.json. Classification trainers run on
ToyShapes; anomaly trainers (``task = "anomaly"``) train on ToyMVTec's test split and are
evaluated on ToyVisA. Trainers that fit a head instead of training (FittedCLIPTrainer: linear
probe, Tip-Adapter) run their fit, which must fill every fitted tensor. A trainer of any other
task fails the first test."""
import itertools
import json

import pytest
import torch

import trainers  # noqa: F401  (registers the trainers)
from dassl_lite.evaluation import ANOMALY_METRIC_KEYS
from dassl_lite.registry import TRAINER_REGISTRY
from trainers.fitted import FittedCLIPTrainer


def renames(cls) -> bool:
    """Whether the trainer class only renames its registered parent (``MultiModalAdapter``, MMA
    under upstream's name): it runs the parent's code, so the walk runs the parent only."""
    parent = cls.__mro__[1]
    own = [k for k in vars(cls) if not (k.startswith("__") and k.endswith("__"))]
    return not own and parent.__name__ in TRAINER_REGISTRY.names() and \
        TRAINER_REGISTRY.get(parent.__name__) is parent


TASKS = {name: TRAINER_REGISTRY.get(name).task for name in TRAINER_REGISTRY.names()}
RENAMED = sorted(n for n in TASKS if renames(TRAINER_REGISTRY.get(n)))
NAMES = sorted(n for n, task in TASKS.items() if task == "classification" and n not in RENAMED)
ANOMALY_NAMES = sorted(n for n, task in TASKS.items() if task == "anomaly")


def test_the_walk_covers_every_method_of_the_papers():
    assert {"ZeroshotCLIP", "ZeroshotCLIP2", "CoOp", "CoCoOp", "MaPLe", "IVLP", "VPT",
            "VPTDeep"} <= set(NAMES)
    assert "ZeroshotAD" in ANOMALY_NAMES
    assert RENAMED == ["MultiModalAdapter"] and "MMA" in NAMES  # ZeroshotCLIP2 is walked
    assert sorted(NAMES + ANOMALY_NAMES + RENAMED) == sorted(TASKS), (
        f"trainers of a task without a walk here: {sorted(set(TASKS) - set(NAMES + ANOMALY_NAMES))}")


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
    if isinstance(trainer, FittedCLIPTrainer):  # fitted, not trained: the fit fills the head
        before = trainer.model_state_dict(trainer.model_name)
        trainer.fit()
        after = trainer.model_state_dict(trainer.model_name)
        assert sorted(after) == sorted(before)
        assert [k for k, v in after.items() if v.shape == before[k].shape and
                torch.equal(v, before[k])] == []
        assert all(torch.isfinite(v.float()).all() for v in after.values())
    elif not two_steps_move_every_trainable_tensor(trainer):
        assert name.startswith("ZeroshotCLIP"), f"{name} has no trainable parameters"
    accuracy = trainer.test()
    assert accuracy == run_accuracy(tmp_path)
    assert 100 / 32 < accuracy <= 100  # above chance among the 32 base classes


def two_steps_move_every_trainable_tensor(trainer) -> bool:
    """Two training steps; True when the trainer has trainable tensors (all of them moved)."""
    params = {k: p for k, p in trainer.model.named_parameters() if p.requires_grad}
    if not params:
        return False
    before = {k: p.detach().clone() for k, p in params.items()}
    trainer.set_model_mode("train")
    # a second pass when the loader holds one batch (TipAdapterF's toy batch is 256)
    batches = itertools.chain.from_iterable(itertools.repeat(trainer.train_loader_x))
    for _ in range(2):
        out = trainer.forward_backward(next(batches))
        assert torch.isfinite(torch.tensor(out["loss"])), out
    assert all(p.dtype == torch.float32 for p in params.values())
    assert [k for k, p in params.items() if torch.equal(before[k], p)] == []
    return True


@pytest.mark.slow
@pytest.mark.parametrize("prec", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ANOMALY_NAMES)
def test_anomaly_two_steps_and_an_evaluation(toy_anomaly_root, anomaly_trainer, tmp_path, name,
                                             prec):
    """Train on two ToyMVTec categories' test split, evaluate on two ToyVisA categories."""
    key = TRAINER_REGISTRY.get(name).precision_key
    common = (key, prec, "DATALOADER.TRAIN_X.BATCH_SIZE", "8")
    trainer = anomaly_trainer(name, toy_anomaly_root, tmp_path / "train", "toy_mvtec", *common,
                              "DATASET.ANOMALY.TRAIN_SPLIT", "test",
                              "DATASET.ANOMALY.CATEGORIES", "('red_circle', 'dots')")
    assert trainer.precision.name == prec
    if two_steps_move_every_trainable_tensor(trainer):
        trainer.save_model(0, str(tmp_path / "train"))
    else:
        assert not trainer.get_model_names(), f"{name} has no trainable parameters"
    test = anomaly_trainer(name, toy_anomaly_root, tmp_path / "test", "toy_visa", *common,
                           "DATASET.ANOMALY.CATEGORIES", "('mesh', 'pink_moon')")
    if test.get_model_names():
        test.load_model(str(tmp_path / "train"))
    headline = test.test()
    with open(tmp_path / "test" / "results.json") as f:
        results = json.load(f)
    assert headline == results["image_auroc"]
    assert all(0 <= results[k] <= 100 for k in ANOMALY_METRIC_KEYS)
    assert sorted(results["per_category"]) == ["mesh", "pink_moon"]
