"""Every benchmark dataset reads a miniature of its real layout: classes, names, splits, few-shot,
base/new, and the split file it builds and saves."""
import json
import math
import os

import pytest

from tests.datasets.miniatures import MAKERS

TEST_ONLY = ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR")
NO_SPLIT_FILE = ("FGVCAircraft", "ImageNet") + TEST_ONLY  # indexed from annotations on every run


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_reads_the_real_layout(name, built, load):
    root, mini = built(name)
    ds = load(name, root)
    assert ds.num_classes == mini.num_classes
    assert len(ds.classnames) == mini.num_classes
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == mini.sizes
    for label, classname in mini.names.items():
        assert ds.lab2cname[label] == classname
    for item in (ds.train_x[0], ds.test[-1]) + ((ds.val[0],) if ds.val else ()):
        assert os.path.isfile(item.impath) and item.impath.startswith(mini.dataset_dir + os.sep)
    assert {d.label for d in ds.test} == set(range(mini.num_classes))


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_building_is_reproducible_and_saved(name, built, tmp_path, load, caplog):
    root, _ = built(name)
    MAKERS[name][0](str(tmp_path))
    first, fresh = load(name, root), load(name, tmp_path)
    rel = lambda ds, items: [(os.path.relpath(d.impath, ds.dataset_dir), d.label) for d in items]  # noqa: E731
    for split in ("train_x", "val", "test"):
        assert rel(first, getattr(first, split)) == rel(fresh, getattr(fresh, split))
    if name in NO_SPLIT_FILE:
        return
    path = os.path.join(fresh.dataset_dir, fresh.split_file)
    with open(path) as f:
        split = json.load(f)
    assert [len(split[k]) for k in ("train", "val", "test")] == [
        len(fresh.train_x), len(fresh.val), len(fresh.test)]
    relpath, label, classname = split["train"][0]
    assert not os.path.isabs(relpath) and fresh.lab2cname[label] == classname
    caplog.set_level("INFO")
    again = load(name, tmp_path)
    assert f"Reading split from {path}" in caplog.text
    assert (again.train_x, again.val, again.test) == (fresh.train_x, fresh.val, fresh.test)


@pytest.mark.parametrize("name", sorted(set(MAKERS) - set(TEST_ONLY)))
def test_fewshot(name, built, load):
    root, mini = built(name)
    ds = load(name, root, "DATASET.NUM_SHOTS", "2")
    n = mini.num_classes
    assert len(ds.train_x) == 2 * n and len(ds.test) == mini.sizes[2]
    assert len(ds.val) == (min(2, mini.sizes[1] // n) * n if mini.sizes[1] else 0)
    assert sorted({d.label for d in ds.train_x}) == list(range(n))
    assert os.path.isfile(os.path.join(ds.dataset_dir, "split_fewshot", "shot_2-seed_1.json"))
    assert load(name, root, "DATASET.NUM_SHOTS", "2").train_x == ds.train_x
    assert load(name, root, "DATASET.NUM_SHOTS", "2", "SEED", "2").train_x != ds.train_x


@pytest.mark.parametrize("name", TEST_ONLY)
def test_test_only_datasets_ignore_num_shots(name, built, load, caplog):
    root, mini = built(name)
    caplog.set_level("INFO")
    ds = load(name, root, "DATASET.NUM_SHOTS", "16")
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == mini.sizes
    assert f"{name} is a test-only dataset: DATASET.NUM_SHOTS=16 is not applied" in caplog.text
    assert not os.path.exists(os.path.join(ds.dataset_dir, "split_fewshot"))


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_base_and_new_classes(name, built, load):
    root, mini = built(name)
    full = load(name, root)
    m = math.ceil(mini.num_classes / 2)
    base = load(name, root, "DATASET.SUBSAMPLE_CLASSES", "base")
    new = load(name, root, "DATASET.SUBSAMPLE_CLASSES", "new")
    assert base.classnames == full.classnames[:m] and new.classnames == full.classnames[m:]
    assert base.num_classes + new.num_classes == mini.num_classes
    assert len(base.test) + len(new.test) == len(full.test)
    assert new.test[0].label == 0 and new.test[0].classname == full.lab2cname[m]


def test_imagenet_has_no_val_split(built, load):
    root, _ = built("ImageNet")
    ds = load("ImageNet", root, "DATASET.NUM_SHOTS", "1")
    assert ds.val == [] and len(ds.train_x) == 1000 and len(ds.test) == 1000
    assert os.path.basename(os.path.dirname(os.path.dirname(ds.test[0].impath))) == "val"


def test_imagenet_variant_finds_classnames_in_imagenet_folder(tmp_path, load):
    MAKERS["ImageNetA"][0](str(tmp_path))
    os.makedirs(tmp_path / "imagenet")
    os.rename(tmp_path / "imagenet-adversarial" / "classnames.txt", tmp_path / "imagenet" / "classnames.txt")
    ds = load("ImageNetA", tmp_path)
    assert ds.num_classes == 200 and ds.classnames[0] == "goldfish"


def test_dtd_alias(built, load):
    root, _ = built("DescribableTextures")
    assert load("DTD", root).classnames == load("DescribableTextures", root).classnames
