"""Prompt learning on the toy world with the pretrained toy CLIP: CoOp and CoCoOp (16 shots, base
classes of ToyShapes) must beat zero-shot CLIP on the base test split by at least 5 points."""
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY_CLIP = os.path.join(REPO, "dassl_lite", "clip", "assets", "ToyCLIP.pt")


def require_toy_clip() -> None:
    if not os.path.isfile(TOY_CLIP):
        pytest.skip(f"the pretrained toy CLIP {TOY_CLIP} is absent; create it with "
                    f"`python tools/pretrain_toy_clip.py`")


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    require_toy_clip()
    from datasets.toy_world import make_toy_world

    root = str(tmp_path_factory.mktemp("toy_world"))
    make_toy_world(root, ["ToyShapes"])
    return root


def base_accuracy(trainer_name, root, out):
    """Train (zero-shot: evaluate) on 16 shots of the base classes; base test accuracy."""
    import datasets  # noqa: F401  (registers the toy datasets)
    import trainers  # noqa: F401
    from dassl_lite.cli import build_parser, setup_cfg
    from dassl_lite.engine import build_trainer
    from dassl_lite.utils import set_random_seed

    args = build_parser().parse_args([
        "--trainer", trainer_name, "--root", root, "--seed", "1", "--output-dir", str(out),
        "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "toy_shapes.yaml"),
        "--config-file", os.path.join(REPO, "configs", "trainers", trainer_name, "toy.yaml"),
        "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base",
    ])
    cfg = setup_cfg(args)
    set_random_seed(cfg.SEED)
    build_trainer(cfg).train()
    with open(os.path.join(str(out), "results.json")) as f:
        return json.load(f)["accuracy"]


@pytest.mark.slow
def test_prompt_learning_beats_zero_shot_on_base_classes(toy_root, tmp_path):
    require_toy_clip()
    zero_shot = base_accuracy("ZeroshotCLIP", toy_root, tmp_path / "zs")
    coop = base_accuracy("CoOp", toy_root, tmp_path / "coop")
    cocoop = base_accuracy("CoCoOp", toy_root, tmp_path / "cocoop")
    summary = f"base accuracy: ZeroshotCLIP {zero_shot:.1f}, CoOp {coop:.1f}, CoCoOp {cocoop:.1f}"
    assert coop >= zero_shot + 5, summary
    assert cocoop >= zero_shot + 5, summary
