"""The registered toy datasets load through DATASET_REGISTRY, generating their data on first use."""
from pathlib import Path

import pytest

import datasets  # noqa: F401  (registers the toy datasets)
from dassl_lite.config import get_cfg_default, merge_from_file, merge_from_list
from dassl_lite.registry import DATASET_REGISTRY
from datasets.toy_generator import CLASSNAMES, DOMAINS
from datasets.toy_world import SplitCounts, make_toy_world

REPO = Path(__file__).resolve().parents[2]
SMALL = SplitCounts(train=2, val=1, test=1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy")
    make_toy_world(str(path), counts=SMALL, workers=2)
    return path


def make_cfg(name, root, *opts):
    cfg = get_cfg_default()
    merge_from_list(cfg, ["DATASET.NAME", name, "DATASET.ROOT", str(root), *opts])
    return cfg


@pytest.mark.parametrize("name", DOMAINS)
def test_loads_through_the_registry(root, name):
    dataset = DATASET_REGISTRY.get(name)(make_cfg(name, root))
    assert dataset.num_classes == 64 and dataset.classnames == CLASSNAMES
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (128, 64, 64)
    assert Path(dataset.train_x[0].impath).is_file()


def test_fewshot_and_base_new(root):
    opts = ["DATASET.NUM_SHOTS", "1", "SEED", "1"]
    base = DATASET_REGISTRY.get("ToyShapes")(make_cfg("ToyShapes", root, *opts,
                                                      "DATASET.SUBSAMPLE_CLASSES", "base"))
    new = DATASET_REGISTRY.get("ToyShapes")(make_cfg("ToyShapes", root, *opts,
                                                     "DATASET.SUBSAMPLE_CLASSES", "new"))
    assert base.classnames == CLASSNAMES[:32] and new.classnames == CLASSNAMES[32:]
    assert (len(base.train_x), len(base.val), len(base.test)) == (32, 32, 32)


def test_generates_on_first_use(tmp_path, monkeypatch, caplog):
    cls = DATASET_REGISTRY.get("ToySketch")
    monkeypatch.setattr(cls, "counts", SplitCounts(1, 1, 1))
    caplog.set_level("INFO", logger="datasets.toy_world")
    dataset = cls(make_cfg("ToySketch", tmp_path))
    assert f"Toy dataset ToySketch not found under {tmp_path}: generating it (first use)" in caplog.text
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (64, 64, 64)


@pytest.mark.parametrize("name", DOMAINS)
def test_dataset_configs_name_registered_datasets(name):
    folder = {"ToyShapes": "toy_shapes", "ToyTextures": "toy_textures", "ToySketch": "toy_sketch"}
    cfg = get_cfg_default()
    merge_from_file(cfg, str(REPO / "configs" / "datasets" / f"{folder[name]}.yaml"))
    assert cfg.DATASET.NAME == name and name in DATASET_REGISTRY
