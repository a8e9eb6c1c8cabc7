"""VPTSupervised learns on the toy world: the shipped supervised ToyViT (pretrained on the toy
world's colours and shapes, two heads; held-out colour 99.54%, shape 72.40%), a linear head on
the class token, 16 shots of the 32 ToyShapes base classes (colour x shape, a label set the
backbone never saw), configs/trainers/VPTSupervised/toy.yaml (2 prompt tokens, lr 0.1), 6 epochs.

Measured with seed 1 (docs/methods.md, "The toy setting"): VPT-deep 81.2%, VPT-shallow 84.7%,
linear probe 88.8% (chance 3.12%); seed 2: 76.2%, 84.8%, 86.2%. Both VPT variants must stay 60
points above chance (63.1%; the width-128 ToyViT before gave 47.81% and 40.78%, the shape-only one
24.53% and 32.66%, all below that line). VPT does not beat the linear probe at this test-sized
budget, so that is documented, not asserted."""
import pytest

EPOCHS = "6"
CHANCE = 100 / 32
MARGIN_OVER_CHANCE = 60.0  # points (measured seed 1: deep +78.1, shallow +81.6)


@pytest.fixture(scope="module")
def accuracies(toy_shapes_root, toy_trainer, tmp_path_factory):
    """Test accuracy (base classes) of VPT-deep and VPT-shallow, same seed and schedule."""
    out = {}
    for name, deep in (("deep", "True"), ("shallow", "False")):
        output_dir = tmp_path_factory.mktemp(f"vptsup_{name}")
        trainer = toy_trainer("VPTSupervised", toy_shapes_root, output_dir, "base",
                              "OPTIM.MAX_EPOCH", EPOCHS, "MODEL.PROMPT.DEEP", deep)
        assert trainer.cfg.MODEL.BACKBONE.NAME == "ToyViT"
        trainer.train()
        out[name] = trainer.test()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["deep", "shallow"])
def test_vpt_learns_the_toy_world_above_chance(accuracies, variant):
    assert accuracies[variant] > CHANCE + MARGIN_OVER_CHANCE, accuracies
