"""PromptSRC, KgCoOp, TCP, MMA, ProGrad and DePT on the toy world with the shipped toy CLIP (16 shots of
ToyShapes, configs/trainers/<T>/toy.yaml, seed 1): each beats zero-shot CLIP on the base test
split by MARGIN points and, their point being generalisation, keeps the accuracy on the new
classes (same weights) within MAX_NEW_DROP points of zero-shot CLIP's, or above. ProGrad's margin
is small: its projection removes most of the cross-entropy step on the toy schedule (measured,
seed 1: base 75.9 against zero-shot 75.3, new 71.1 against 70.8, i.e. 2 and 1 more of the 320
test images; seeds 2 and 3: base 76.4, 76.6; DePT 83.9 and 80.0). 0.3 asks for one more image."""
import pytest

import trainers  # noqa: F401  (registers the trainers)
from dassl_lite.registry import TRAINER_REGISTRY

MARGIN = {"PromptSRC": 3.0, "KgCoOp": 3.0, "TCP": 3.0, "MMA": 3.0, "ProGrad": 0.3, "DePT": 3.0}
MAX_NEW_DROP = 3.0


def test_the_every_trainer_walk_covers_them():
    # test_every_trainer.py is parametrized over every registered trainer
    assert set(MARGIN) <= set(TRAINER_REGISTRY.names())


@pytest.fixture(scope="module")
def zero_shot(toy_shapes_root, toy_trainer, run_accuracy, tmp_path_factory):
    """ZeroshotCLIP's (base, new) test accuracy on ToyShapes."""
    out = tmp_path_factory.mktemp("zs")
    toy_trainer("ZeroshotCLIP", toy_shapes_root, out / "base").train()
    toy_trainer("ZeroshotCLIP", toy_shapes_root, out / "new", "new").train()
    return run_accuracy(out / "base"), run_accuracy(out / "new")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MARGIN))
def test_beats_zero_shot_on_base_and_keeps_new_classes(toy_shapes_root, zero_shot, toy_trainer,
                                                       run_accuracy, tmp_path, name,
                                                       record_property):
    toy_trainer(name, toy_shapes_root, tmp_path / "base").train()
    base = run_accuracy(tmp_path / "base")
    new_trainer = toy_trainer(name, toy_shapes_root, tmp_path / "new", "new")
    new_trainer.load_model(str(tmp_path / "base"))
    new = new_trainer.test()
    zs_base, zs_new = zero_shot
    summary = (f"{name}: base {base:.1f}, new {new:.1f} "
               f"(ZeroshotCLIP base {zs_base:.1f}, new {zs_new:.1f})")
    record_property("accuracy", summary)
    print(summary)
    assert base >= zs_base + MARGIN[name], summary
    assert new >= zs_new - MAX_NEW_DROP, summary
