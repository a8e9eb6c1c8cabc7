"""Shared fixtures: the tiny user plug-in (trainer + dataset) and configs built from it."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
TINY_WORLD = os.path.join(FIXTURES, "tiny_world.py")


@pytest.fixture(scope="session", autouse=True)
def _session_feature_cache(tmp_path_factory):
    """Runs that use the feature cache without naming its folder write to a folder of this test
    session (``$DASSL_LITE_FEATURE_CACHE``, inherited by subprocesses), never to the user's
    ~/.cache, and never start warm from an earlier session."""
    from dassl_lite.data.feature_cache import ENV_DIR

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_DIR, str(tmp_path_factory.mktemp("feature_cache")))
        yield


@pytest.fixture(scope="session")
def tiny_world():
    """The plug-in module, imported once the way ``--import`` does it."""
    from dassl_lite.cli import import_user_module

    import_user_module(TINY_WORLD)
    return sys.modules["dassl_lite_user_tiny_world"]


@pytest.fixture(scope="session")
def tiny_root(tiny_world, tmp_path_factory):
    """A dataset root holding TinyColors (4 classes, 6/2/4 images per class)."""
    root = tmp_path_factory.mktemp("tiny_data")
    tiny_world.make_tiny_colors(str(root))
    return str(root)


@pytest.fixture
def make_cfg(tiny_world, tiny_root, tmp_path):
    """``make_cfg(KEY, VALUE, ...)``: the tiny dataset + TinyNet config, merged like train.py."""
    from dassl_lite.cli import build_parser, setup_cfg

    def _make(*opts, output_dir=None):
        args = build_parser().parse_args([
            "--trainer", "TinyNet", "--root", tiny_root, "--seed", "1",
            "--dataset-config-file", os.path.join(FIXTURES, "tiny_dataset.yaml"),
            "--config-file", os.path.join(FIXTURES, "tiny_trainer.yaml"),
            "--output-dir", str(output_dir or tmp_path / "out"), *opts,
        ])
        return setup_cfg(args)

    return _make


@pytest.fixture
def clip_cfg(tiny_world, tiny_root, tmp_path):
    """``clip_cfg(TRAINER, CLIP_PATH, KEY, VALUE, ..., output_dir=None)``: TinyColors with the CLIP
    checkpoint at CLIP_PATH, merged as tools/train.py does (32 px input, 1 epoch, batches of 8,
    no loader workers, the trainer's precision key at fp32); later options win."""
    import trainers  # noqa: F401  (registers the trainers)
    from dassl_lite.cli import build_parser, setup_cfg
    from dassl_lite.registry import TRAINER_REGISTRY

    def _make(trainer, clip_path, *opts, output_dir=None):
        prec = [TRAINER_REGISTRY.get(trainer).precision_key, "fp32"]
        args = build_parser().parse_args([
            "--trainer", trainer, "--root", tiny_root, "--seed", "1",
            "--dataset-config-file", os.path.join(FIXTURES, "tiny_dataset.yaml"),
            "--output-dir", str(output_dir or tmp_path / "out"),
            "INPUT.SIZE", "(32, 32)", "MODEL.BACKBONE.NAME", clip_path, "OPTIM.MAX_EPOCH", "1",
            "TRAIN.PRINT_FREQ", "100", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "DATALOADER.TEST.BATCH_SIZE", "8", *prec, *opts,
        ])
        return setup_cfg(args)

    return _make


@pytest.fixture(scope="session")
def random_clip_file(tmp_path_factory):
    """``random_clip_file(CLIPConfig)``: path of a CLIP with that config and seed-0 random
    weights, saved as a plain OpenAI-format state dict."""
    import torch

    from dassl_lite.clip import CLIP

    def _make(config):
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp("clip") / "random_clip.pt"
        torch.save(CLIP(config).state_dict(), path)
        return str(path)

    return _make


def seeded_trainer(cfg):
    """The trainer of ``cfg``, built after seeding everything with ``cfg.SEED``."""
    import trainers  # noqa: F401  (registers the trainers)
    from dassl_lite.engine import build_trainer
    from dassl_lite.utils import set_random_seed

    set_random_seed(cfg.SEED)
    return build_trainer(cfg)


@pytest.fixture(scope="session")
def build_seeded():
    """``build_seeded(cfg)``: the trainer of ``cfg`` built after seeding with ``cfg.SEED``."""
    return seeded_trainer


# ---------------------------------------------------------------- the toy world with ToyCLIP

@pytest.fixture(scope="module")
def toy_shapes_root(tmp_path_factory):
    """A dataset root holding the generated ToyShapes dataset (the shipped ToyCLIP must exist)."""
    from dassl_lite.clip.loader import ASSETS_DIR
    from datasets.toy_world import make_toy_world

    checkpoint = ASSETS_DIR / "ToyCLIP.pt"
    assert checkpoint.is_file(), (
        f"the shipped toy CLIP {checkpoint} is missing; it is part of the repository "
        f"(rebuild it with `python tools/pretrain_toy_clip.py`)")
    root = str(tmp_path_factory.mktemp("toy_world"))
    make_toy_world(root, ["ToyShapes"])
    return root


@pytest.fixture(scope="session")
def toy_trainer():
    """``toy_trainer(TRAINER, ROOT, OUTPUT_DIR, SUBSAMPLE, KEY, VALUE, ...)``: a seeded trainer on
    16 shots of ToyShapes with the trainer's toy.yaml (seed 1), as tools/base2new.py builds it."""
    import datasets  # noqa: F401  (registers the toy datasets)
    import trainers  # noqa: F401
    from dassl_lite.cli import build_parser, setup_cfg
    from dassl_lite.protocols.resolve import resolve_trainer_config

    def _make(trainer, root, output_dir, subsample="base", *opts):
        toy_cfg = resolve_trainer_config("toy", trainer, os.path.join(REPO, "configs", "trainers"))
        args = build_parser().parse_args([
            "--trainer", trainer, "--root", root, "--seed", "1", "--output-dir", str(output_dir),
            "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "toy_shapes.yaml"),
            "--config-file", toy_cfg,
            "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", subsample, *opts,
        ])
        return seeded_trainer(setup_cfg(args))

    return _make


def results_accuracy(output_dir) -> float:
    """The test accuracy a run wrote to ``<output_dir>/results.json``."""
    import json

    with open(os.path.join(str(output_dir), "results.json")) as f:
        return json.load(f)["accuracy"]


@pytest.fixture(scope="session")
def run_accuracy():
    """``run_accuracy(OUTPUT_DIR)``: the test accuracy in the run's results.json."""
    return results_accuracy


@pytest.fixture(scope="session")
def small_toy_root(tmp_path_factory):
    """A dataset root holding a small ToyShapes (all 64 classes; 2/1/2 train/val/test images per
    class): enough for a training step, an evaluation or the class names, in a few seconds."""
    from datasets.toy_world import SplitCounts, make_toy_world

    root = str(tmp_path_factory.mktemp("small_toy_world"))
    make_toy_world(root, ["ToyShapes"], counts=SplitCounts(train=2, val=1, test=2), workers=1)
    return root

# ---------------------------------------------------------------- the toy anomaly world

@pytest.fixture(scope="session")
def toy_anomaly_root(tmp_path_factory):
    """A dataset root holding the generated ToyMVTec and ToyVisA datasets."""
    from datasets.toy_anomaly_world import make_toy_anomaly_world

    root = str(tmp_path_factory.mktemp("toy_anomaly"))
    make_toy_anomaly_world(root)
    return root


@pytest.fixture(scope="session")
def anomaly_trainer():
    """``anomaly_trainer(TRAINER, ROOT, OUTPUT_DIR, DATASET, KEY, VALUE, ...)``: a seeded trainer
    on a toy anomaly dataset ("toy_mvtec" or "toy_visa") with the trainer's toy.yaml (seed 1)."""
    import datasets  # noqa: F401  (registers the toy datasets)
    import trainers  # noqa: F401
    from dassl_lite.cli import build_parser, setup_cfg
    from dassl_lite.protocols.resolve import resolve_trainer_config

    def _make(trainer, root, output_dir, dataset="toy_visa", *opts):
        toy_cfg = resolve_trainer_config("toy", trainer, os.path.join(REPO, "configs", "trainers"))
        args = build_parser().parse_args([
            "--trainer", trainer, "--root", root, "--seed", "1", "--output-dir", str(output_dir),
            "--dataset-config-file", os.path.join(REPO, "configs", "datasets", f"{dataset}.yaml"),
            "--config-file", toy_cfg, *opts,
        ])
        return seeded_trainer(setup_cfg(args))

    return _make


@pytest.fixture(scope="session")
def benchmark():
    """tools/benchmark.py loaded as a module (it is a script, not part of the package)."""
    import importlib.util

    path = os.path.join(REPO, "tools", "benchmark.py")
    spec = importlib.util.spec_from_file_location("dassl_lite_tools_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
