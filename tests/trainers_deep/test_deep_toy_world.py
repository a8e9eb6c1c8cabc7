"""Deep prompt learning on the toy world with the pretrained toy CLIP: MaPLe, IVLP and VPTDeep
(16 shots, base classes of ToyShapes, configs/trainers/<T>/toy.yaml) must beat zero-shot CLIP on
the base test split. Accuracies on the new classes are measured too (reported, not asserted)."""
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY_CLIP = os.path.join(REPO, "dassl_lite", "clip", "assets", "ToyCLIP.pt")
MARGIN = 3.0  # points above zero-shot


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


def build_toy(trainer_name, root, out, subsample):
    import trainers  # noqa: F401
    from dassl_lite.cli import build_parser, setup_cfg
    from dassl_lite.engine import build_trainer
    from dassl_lite.utils import set_random_seed

    args = build_parser().parse_args([
        "--trainer", trainer_name, "--root", root, "--seed", "1", "--output-dir", str(out),
        "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "toy_shapes.yaml"),
        "--config-file", os.path.join(REPO, "configs", "trainers", trainer_name, "toy.yaml"),
        "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", subsample,
    ])
    cfg = setup_cfg(args)
    set_random_seed(cfg.SEED)
    return build_trainer(cfg)


def accuracy(out):
    with open(os.path.join(str(out), "results.json")) as f:
        return json.load(f)["accuracy"]


@pytest.fixture(scope="module")
def zero_shot_base(toy_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("zs")
    build_toy("ZeroshotCLIP", toy_root, out, "base").train()
    return accuracy(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MaPLe", "IVLP", "VPTDeep"])
def test_deep_prompts_beat_zero_shot_on_base_classes(toy_root, zero_shot_base, tmp_path, name,
                                                     record_property):
    build_toy(name, toy_root, tmp_path / "base", "base").train()
    base = accuracy(tmp_path / "base")
    new_trainer = build_toy(name, toy_root, tmp_path / "new", "new")
    new_trainer.load_model(str(tmp_path / "base"))
    new = new_trainer.test()
    summary = f"{name}: base {base:.1f}, new {new:.1f} (ZeroshotCLIP base {zero_shot_base:.1f})"
    record_property("accuracy", summary)
    print(summary)
    assert base >= zero_shot_base + MARGIN, summary
