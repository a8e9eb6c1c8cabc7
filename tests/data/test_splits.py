import json
import random

import pytest

from dassl_lite.data import DatasetBase, Datum
from dassl_lite.data.splits import (
    generate_fewshot_dataset,
    read_and_split_data,
    read_split,
    save_split,
    split_trainval,
    subsample_classes,
)


def test_save_split_writes_upstream_json_with_relative_paths(tmp_path):
    prefix = str(tmp_path / "images")
    train = [Datum(f"{prefix}/cat/1.jpg", 0, classname="cat"), Datum(f"{prefix}/dog/2.jpg", 1, classname="dog")]
    val = [Datum(f"{prefix}/cat/3.jpg", 0, classname="cat")]
    test = [Datum(f"{prefix}/dog/4.jpg", 1, classname="dog")]
    path = str(tmp_path / "split_zhou_X.json")
    save_split(train, val, test, path, prefix)
    expected = (
        '{\n    "train": [\n        [\n            "cat/1.jpg",\n            0,\n            "cat"\n        ],\n'
        '        [\n            "dog/2.jpg",\n            1,\n            "dog"\n        ]\n    ],\n'
        '    "val": [\n        [\n            "cat/3.jpg",\n            0,\n            "cat"\n        ]\n    ],\n'
        '    "test": [\n        [\n            "dog/4.jpg",\n            1,\n            "dog"\n        ]\n    ]\n}'
    )
    assert open(path).read() == expected
    assert read_split(path, prefix) == (train, val, test)
    moved = read_split(path, "/elsewhere")
    assert moved[0][0] == Datum("/elsewhere/cat/1.jpg", 0, classname="cat")
    assert DatasetBase.read_split is read_split  # the upstream name, as a static method


def test_save_split_rejects_paths_outside_prefix(tmp_path):
    with pytest.raises(ValueError, match="is not inside the path prefix"):
        save_split([Datum("/other/a.jpg")], [], [], str(tmp_path / "s.json"), str(tmp_path))


def test_read_split_names_missing_keys(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"train": [], "test": []}))
    with pytest.raises(ValueError, match="must have keys train, val, test; missing val"):
        read_split(str(path), str(tmp_path))


def test_read_split_warns_when_test_images_are_also_in_train(tmp_path, caplog):
    path = tmp_path / "split_zhou_Leak.json"
    path.write_text(json.dumps({"train": [["a/1.jpg", 0, "a"], ["a/2.jpg", 0, "a"]],
                                "val": [["a/3.jpg", 0, "a"]],
                                "test": [["a/2.jpg", 0, "a"], ["a/4.jpg", 0, "a"]]}))
    with caplog.at_level("WARNING", logger="dassl_lite.data.splits"):
        train, val, test = read_split(str(path), str(tmp_path))
    assert len(train) == 2 and len(test) == 2  # read as written
    leaks = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(leaks) == 1
    assert "1 image(s) in both 'train' and 'test' (first: a/2.jpg)" in leaks[0]
    assert str(path) in leaks[0]
    caplog.clear()
    path.write_text(json.dumps({"train": [["a/1.jpg", 0, "a"]], "val": [],
                                "test": [["a/4.jpg", 0, "a"]]}))
    with caplog.at_level("WARNING", logger="dassl_lite.data.splits"):
        read_split(str(path), str(tmp_path))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def _items(n_classes=4, per_class=10):
    return [Datum(f"/d/{y}/{i}.jpg", y, classname=f"c{y}") for y in range(n_classes) for i in range(per_class)]


def test_fewshot_is_reproducible_and_seed_dependent():
    data = _items()
    a = generate_fewshot_dataset(data, num_shots=3, seed=1)
    assert len(a) == 12 and [d.label for d in a] == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert a == generate_fewshot_dataset(data, num_shots=3, seed=1)
    assert a != generate_fewshot_dataset(data, num_shots=3, seed=2)
    state = random.getstate()
    generate_fewshot_dataset(data, num_shots=3, seed=1)
    assert random.getstate() == state  # a seed never touches the global RNG


def test_fewshot_order_independent_of_label_order():
    data = _items()
    by_label_reversed = [d for y in (3, 1, 0, 2) for d in data if d.label == y]
    assert generate_fewshot_dataset(data, num_shots=2, seed=5) == generate_fewshot_dataset(
        by_label_reversed, num_shots=2, seed=5
    )


def test_fewshot_with_shared_rng_reproduces_upstream_global_stream():
    train, val = _items(per_class=10), _items(per_class=6)
    rng = random.Random(7)
    ours = (generate_fewshot_dataset(train, num_shots=4, seed=rng),
            generate_fewshot_dataset(val, num_shots=2, seed=rng))
    random.seed(7)  # upstream: set_random_seed, then random.sample per class, train then val
    upstream = []
    for source, k in ((train, 4), (val, 2)):
        groups = {}
        for d in source:
            groups.setdefault(d.label, []).append(d)
        upstream.append([d for items in groups.values() for d in random.sample(items, k)])
    assert list(ours) == upstream


def test_fewshot_small_classes_repeat_and_passthrough():
    data = _items(n_classes=2, per_class=2)
    assert generate_fewshot_dataset(data, num_shots=5, seed=0) == data
    rep = generate_fewshot_dataset(data, num_shots=5, repeat=True, seed=0)
    assert len(rep) == 10 and set(rep) <= set(data)
    assert generate_fewshot_dataset(data, num_shots=-1) is data
    a, b = generate_fewshot_dataset(data, _items(), num_shots=1, seed=0)
    assert len(a) == 2 and len(b) == 4


def test_subsample_odd_class_count():
    data = [Datum(f"/d/{y}.jpg", y, domain=y % 2, classname=f"c{y}") for y in range(5)]
    test = list(reversed(data))
    base_train, base_test = subsample_classes(data, test, subsample="base")
    assert [(d.label, d.classname, d.domain) for d in base_train] == [(0, "c0", 0), (1, "c1", 1), (2, "c2", 0)]
    assert [d.label for d in base_test] == [2, 1, 0]
    new_train, new_test = subsample_classes(data, test, subsample="new")
    assert [(d.label, d.classname, d.impath) for d in new_train] == [(0, "c3", "/d/3.jpg"), (1, "c4", "/d/4.jpg")]
    assert DatasetBase(train_x=new_train, test=new_test).classnames == ["c3", "c4"]
    assert subsample_classes(data, test, subsample="all") == (data, test)


def test_subsample_bad_value_names_choices():
    with pytest.raises(ValueError) as e:
        subsample_classes([], subsample="novel")
    assert str(e.value) == "subsample (DATASET.SUBSAMPLE_CLASSES) must be one of all, base, new; got 'novel'"


def test_read_and_split_data(tmp_path):
    for cname, n in (("b_cls", 10), ("a_cls", 10), ("ignored", 10)):
        for i in range(n):
            p = tmp_path / cname / f"{i}.jpg"
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(b"")
    (tmp_path / ".hidden").mkdir()
    train, val, test = read_and_split_data(str(tmp_path), ignored=["ignored"], new_cnames={"a_cls": "A"}, seed=3)
    assert (len(train), len(val), len(test)) == (10, 4, 6)
    assert sorted({(d.label, d.classname) for d in train}) == [(0, "A"), (1, "b_cls")]
    assert len(set(train) | set(val) | set(test)) == 20
    assert (train, val, test) == read_and_split_data(str(tmp_path), ignored=["ignored"], new_cnames={"a_cls": "A"}, seed=3)
    assert train != read_and_split_data(str(tmp_path), ignored=["ignored"], new_cnames={"a_cls": "A"}, seed=4)[0]
    with pytest.raises(ValueError, match="has 10 images: too few for a 90%/10%/0% train/val/test split"):
        read_and_split_data(str(tmp_path), p_trn=0.9, p_val=0.1)


def test_split_trainval():
    trainval = _items(n_classes=3, per_class=10)
    train, val = split_trainval(trainval, p_val=0.2, seed=0)
    assert (len(train), len(val)) == (24, 6)
    assert sorted(train + val, key=lambda d: d.impath) == sorted(trainval, key=lambda d: d.impath)
    assert (train, val) == split_trainval(trainval, p_val=0.2, seed=0)
    with pytest.raises(ValueError, match="Class 0 has 1 trainval items: too few for p_val=0.2"):
        split_trainval([Datum("a", 0)], p_val=0.2)
