"""Tiny image datasets built in tmp_path, and throwaway dataset classes for the data tests."""
import os

import pytest
from PIL import Image

from dassl_lite.config import get_cfg_default
from dassl_lite.data import Datum, SplitDataset
from dassl_lite.data.splits import read_and_split_data, save_split
from dassl_lite.registry import DATASET_REGISTRY

CLASSNAMES = ["apple", "bear", "cat", "dog", "eel"]
COUNTS = {"train": 6, "val": 5, "test": 3}  # images per class and split


@DATASET_REGISTRY.register(name="_DataTestTiny", force=True)
class DataTestTiny(SplitDataset):
    """Five classes: tiny/images/<class>/<split>_<i>.png + tiny/split_zhou_Tiny.json."""

    dataset_dir = "tiny"
    split_file = "split_zhou_Tiny.json"
    num_classes_expected = 5
    layout = "tiny/images/<class>/*.png + tiny/split_zhou_Tiny.json"
    instructions = "see DATASETS.md#tiny"


@DATASET_REGISTRY.register(name="_DataTestTinyRaw", force=True)
class DataTestTinyRaw(DataTestTiny):
    """Same folder, but the split file is built from the class folders when missing."""

    def build_split(self):
        return read_and_split_data(self.image_dir, p_trn=0.5, p_val=0.3, seed=0)


@DATASET_REGISTRY.register(name="_DataTestTinyNoVal", force=True)
class DataTestTinyNoVal(DataTestTiny):
    """A dataset without a val split (as ImageNet)."""

    has_val = False

    def load_split(self):
        train, _, test = super().load_split()
        return train, [], test


def write_png(path, color=(255, 0, 0), size=(8, 8)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path)


def build_tiny(root, counts=COUNTS, classnames=CLASSNAMES, write_split=True):
    """Write images (8x8, one colour per class) and the split file; return the splits."""
    image_dir = os.path.join(root, "tiny", "images")
    splits = {name: [] for name in counts}
    for label, cname in enumerate(classnames):
        for name, n in counts.items():
            for i in range(n):
                path = os.path.join(image_dir, cname, f"{name}_{i}.png")
                write_png(path, color=(40 * label, 255 - 40 * label, 7 * i))
                splits[name].append(Datum(path, label, 0, cname))
    if write_split:
        save_split(splits["train"], splits["val"], splits["test"],
                   os.path.join(root, "tiny", "split_zhou_Tiny.json"), image_dir)
    return splits


def make_cfg(root, name="_DataTestTiny", **opts):
    """Default config for the tiny dataset: no workers, 16x16 input, CoOp's transforms."""
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.INPUT.SIZE = (16, 16)
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    for key, value in opts.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    build_tiny(str(root))
    return root


@pytest.fixture
def cfg_for():
    """``cfg_for(root, name="_DataTestTiny", **{"DATASET.NUM_SHOTS": 2})`` -> config."""
    return make_cfg


@pytest.fixture
def tiny_builder():
    """``tiny_builder(root, counts=..., classnames=..., write_split=True)`` -> splits."""
    return build_tiny


@pytest.fixture
def png_writer():
    """``png_writer(path, color=(r, g, b), size=(w, h))``."""
    return write_png
