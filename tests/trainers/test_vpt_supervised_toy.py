"""VPTSupervised learns on the toy world: the shipped supervised ToyViT (pretrained on the toy
world's colours and shapes, two heads; held-out colour 99.35%, shape 33.01%), a linear head on
the class token, 16 shots of the 32 ToyShapes base classes (colour x shape, a label set the
backbone never saw), configs/trainers/VPTSupervised/toy.yaml (2 prompt tokens, lr 0.1), 6 epochs.

Measured with seed 1 (docs/methods.md, "The toy setting"): VPT-deep 47.81%, VPT-shallow 40.78%,
linear probe 50.31% (chance 3.12%). Both VPT variants must stay 30 points above chance (33.1%;
the shape-only ToyViT before gave 24.53% and 32.66%, below that line). VPT-deep does not beat the
linear probe at this test-sized budget, so that is documented, not asserted."""
import pytest

EPOCHS = "6"
CHANCE = 100 / 32
MARGIN_OVER_CHANCE = 30.0  # points (measured: deep +44.7, shallow +37.7)


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
