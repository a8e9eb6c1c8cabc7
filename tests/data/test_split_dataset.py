import json
import logging
import os
import shutil

import pytest

from dassl_lite.config import ConfigError
from dassl_lite.data import DatasetLayoutError, Datum, build_dataset
from dassl_lite.data.splits import save_split

LOGGER = "dassl_lite.data.split_dataset"


def messages(caplog):
    return [r.getMessage() for r in caplog.records]


def test_reads_split_file(data_root, cfg_for):
    ds = build_dataset(cfg_for(data_root))
    root = os.path.abspath(data_root)
    assert ds.dataset_dir == os.path.join(root, "tiny")
    assert ds.image_dir == os.path.join(root, "tiny", "images")
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (30, 25, 15)
    assert ds.num_classes == 5
    assert ds.classnames == ["apple", "bear", "cat", "dog", "eel"]
    assert ds.train_x[0] == Datum(os.path.join(ds.image_dir, "apple", "train_0.png"), 0, 0, "apple")
    assert not os.path.exists(os.path.join(ds.dataset_dir, "split_fewshot"))


def test_fewshot_counts_val_min_k_4(data_root, cfg_for):
    ds = build_dataset(cfg_for(data_root, **{"DATASET.NUM_SHOTS": 2, "SEED": 1}))
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (10, 10, 15)
    ds = build_dataset(cfg_for(data_root, **{"DATASET.NUM_SHOTS": 5, "SEED": 1}))
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (25, 20, 15)  # val: min(5, 4) per class


def test_fewshot_cache_written_then_read(data_root, cfg_for, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    cfg = cfg_for(data_root, **{"DATASET.NUM_SHOTS": 2, "SEED": 3})
    first = build_dataset(cfg)
    cache = os.path.join(first.dataset_dir, "split_fewshot", "shot_2-seed_3.json")
    assert f"Saved few-shot split to {cache}" in messages(caplog)
    data = json.load(open(cache))
    assert sorted(data) == ["train", "val"]
    assert len(data["train"]) == 10 and len(data["val"]) == 10
    rel, label, cname = data["train"][0]
    assert rel.startswith("images/apple/train_") and (label, cname) == (0, "apple")
    assert all(not os.path.isabs(row[0]) for row in data["train"] + data["val"])

    caplog.clear()
    mtime = os.stat(cache).st_mtime_ns
    second = build_dataset(cfg)
    assert f"Reading few-shot split from {cache}" in messages(caplog)
    assert os.stat(cache).st_mtime_ns == mtime
    assert (second.train_x, second.val) == (first.train_x, first.val)

    other = build_dataset(cfg_for(data_root, **{"DATASET.NUM_SHOTS": 2, "SEED": 4}))
    assert other.train_x != first.train_x
    assert os.path.isfile(os.path.join(first.dataset_dir, "split_fewshot", "shot_2-seed_4.json"))


def test_fewshot_cache_survives_moving_the_root(data_root, cfg_for, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    opts = {"DATASET.NUM_SHOTS": 3, "SEED": 1}
    before = build_dataset(cfg_for(data_root, **opts))
    moved = data_root.parent / "moved_root"
    shutil.move(str(data_root), str(moved))
    caplog.clear()
    after = build_dataset(cfg_for(moved, **opts))
    cache = os.path.join(moved, "tiny", "split_fewshot", "shot_3-seed_1.json")
    assert f"Reading few-shot split from {cache}" in messages(caplog)
    old_prefix, new_prefix = str(data_root), str(moved)
    assert [d.impath.replace(new_prefix, old_prefix) for d in after.train_x] == [d.impath for d in before.train_x]
    assert all(os.path.isfile(d.impath) for d in after.train_x)


def test_stale_fewshot_cache_is_resampled(data_root, cfg_for, caplog):
    cfg = cfg_for(data_root, **{"DATASET.NUM_SHOTS": 1, "SEED": 1})
    ds = build_dataset(cfg)
    cache = os.path.join(ds.dataset_dir, "split_fewshot", "shot_1-seed_1.json")
    data = json.load(open(cache))
    data["train"][0][0] = "images/apple/gone.png"
    json.dump(data, open(cache, "w"))
    caplog.set_level(logging.INFO, logger=LOGGER)
    again = build_dataset(cfg)
    assert f"Few-shot cache {cache} does not match {ds.split_path}; sampling again" in messages(caplog)
    assert again.train_x == ds.train_x
    assert json.load(open(cache))["train"][0][0] != "images/apple/gone.png"


def test_negative_seed_samples_without_cache(data_root, cfg_for, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    ds = build_dataset(cfg_for(data_root, **{"DATASET.NUM_SHOTS": 2, "SEED": -1}))
    assert len(ds.train_x) == 10
    assert not os.path.exists(os.path.join(ds.dataset_dir, "split_fewshot"))
    assert ("SEED=-1 < 0: sampling a 2-shot split without caching it "
            "(set SEED >= 0 for a reproducible, cached split)") in messages(caplog)


@pytest.mark.parametrize("subsample, names", [("base", ["apple", "bear", "cat"]), ("new", ["dog", "eel"])])
def test_subsample_classes_from_cfg(data_root, cfg_for, subsample, names):
    ds = build_dataset(cfg_for(data_root, **{"DATASET.SUBSAMPLE_CLASSES": subsample, "DATASET.NUM_SHOTS": 2, "SEED": 1}))
    assert ds.num_classes == len(names) and ds.classnames == names
    assert sorted({d.label for d in ds.test}) == list(range(len(names)))
    assert len(ds.train_x) == 2 * len(names) and len(ds.test) == 3 * len(names)


def test_class_only_in_test_counts(tmp_path, tiny_builder, cfg_for):
    root = tmp_path / "r"
    splits = tiny_builder(str(root))
    image_dir = os.path.join(root, "tiny", "images")
    train = [d for d in splits["train"] if d.label != 4]
    save_split(train, splits["val"], splits["test"], os.path.join(root, "tiny", "split_zhou_Tiny.json"), image_dir)
    ds = build_dataset(cfg_for(root, **{"DATASET.NUM_SHOTS": 1, "SEED": 1}))
    assert ds.num_classes == 5 and ds.classnames[4] == "eel"
    assert len(ds.train_x) == 4


def expected_error(problem):
    return (f"DataTestTiny: {problem}. Expected layout under DATASET.ROOT: "
            "tiny/images/<class>/*.png + tiny/split_zhou_Tiny.json. Instructions: see DATASETS.md#tiny.")


def test_missing_folder_error(tmp_path, cfg_for):
    with pytest.raises(DatasetLayoutError) as e:
        build_dataset(cfg_for(tmp_path / "nowhere"))
    assert isinstance(e.value, FileNotFoundError)
    path = os.path.join(tmp_path, "nowhere", "tiny")
    root = str(tmp_path / "nowhere")
    assert str(e.value) == expected_error(f"dataset folder not found (DATASET.ROOT={root!r}): {path}")


def test_missing_split_file_without_builder(data_root, cfg_for):
    split = os.path.join(data_root, "tiny", "split_zhou_Tiny.json")
    os.remove(split)
    with pytest.raises(DatasetLayoutError) as e:
        build_dataset(cfg_for(data_root))
    assert str(e.value) == expected_error(
        f"split file not found: {split}, and DataTestTiny cannot build it from raw annotations")


def test_build_split_from_raw_folders_then_read(data_root, cfg_for, caplog):
    caplog.set_level(logging.INFO)
    split = os.path.join(data_root, "tiny", "split_zhou_Tiny.json")
    os.remove(split)
    ds = build_dataset(cfg_for(data_root, name="_DataTestTinyRaw"))
    assert os.path.isfile(split) and f"Saved split to {split}" in messages(caplog)
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (35, 20, 15)  # 14 per class: 7/4/3
    again = build_dataset(cfg_for(data_root, name="_DataTestTinyRaw"))
    assert (again.train_x, again.val, again.test) == (ds.train_x, ds.val, ds.test)
    assert f"Reading split from {split}" in messages(caplog)


def _rewrite(root, train, val, test):
    image_dir = os.path.join(root, "tiny", "images")
    split = os.path.join(root, "tiny", "split_zhou_Tiny.json")
    save_split(train, val, test, split, image_dir)
    return split


def test_empty_split_error(data_root, cfg_for, tiny_builder):
    splits = tiny_builder(str(data_root), write_split=False)
    split = _rewrite(data_root, splits["train"], splits["val"], [])
    with pytest.raises(DatasetLayoutError) as e:
        build_dataset(cfg_for(data_root))
    assert str(e.value) == expected_error(f"the test split is empty in {split}")


def test_class_count_mismatch_error(tmp_path, cfg_for, tiny_builder):
    root = tmp_path / "r"
    splits = tiny_builder(str(root), classnames=["a", "b", "c", "d"])
    split = os.path.join(root, "tiny", "split_zhou_Tiny.json")
    with pytest.raises(DatasetLayoutError) as e:
        build_dataset(cfg_for(root))
    assert str(e.value) == expected_error(f"expected 5 classes but {split} has 4")
    assert len(splits["train"]) == 24


def test_label_gap_error(data_root, cfg_for, tiny_builder):
    splits = tiny_builder(str(data_root), write_split=False)
    no_bear = [[d for d in splits[k] if d.label != 1] for k in ("train", "val", "test")]
    split = _rewrite(data_root, *no_bear)
    with pytest.raises(DatasetLayoutError) as e:
        build_dataset(cfg_for(data_root))
    assert str(e.value) == expected_error(f"labels in {split} must be 0..4 without gaps; missing [1], unexpected []")


def test_missing_first_image_error(data_root, cfg_for):
    image = os.path.join(data_root, "tiny", "images", "apple", "train_0.png")
    os.remove(image)
    split = os.path.join(data_root, "tiny", "split_zhou_Tiny.json")
    with pytest.raises(DatasetLayoutError) as e:
        build_dataset(cfg_for(data_root))
    assert str(e.value) == expected_error(f"the first train image {os.path.abspath(image)} (from {split}) does not exist")


def test_dataset_without_val(data_root, cfg_for):
    ds = build_dataset(cfg_for(data_root, name="_DataTestTinyNoVal", **{"DATASET.NUM_SHOTS": 2, "SEED": 1}))
    assert ds.val == [] and len(ds.train_x) == 10


def test_unknown_or_empty_dataset_name(data_root, cfg_for):
    with pytest.raises(KeyError, match="Did you mean '_DataTestTiny'"):
        build_dataset(cfg_for(data_root, name="_DataTestTinny"))
    with pytest.raises(ConfigError, match="DATASET.NAME is empty"):
        build_dataset(cfg_for(data_root, name=""))
