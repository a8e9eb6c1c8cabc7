"""A damaged layout gives an error naming the path, what was expected and where the instructions are."""
import json
import os
import shutil
import sys

import pytest

from dassl_lite.data import DatasetLayoutError
from dassl_lite.errors import DasslLiteError
from tests.datasets.miniatures import (IMAGENET, make_dtd, make_fgvc_aircraft, make_imagenet,
                                       make_imagenet_a, make_imagenetv2, make_oxford_pets)


def error_of(load, name, root, *opts) -> str:
    with pytest.raises(DatasetLayoutError) as info:
        load(name, root, *opts)
    assert isinstance(info.value, DasslLiteError)  # tools print it without a traceback
    return str(info.value)


def test_missing_dataset_folder(tmp_path, load):
    msg = error_of(load, "OxfordPets", tmp_path)
    assert msg == (
        f"OxfordPets: dataset folder not found (DATASET.ROOT={str(tmp_path)!r}): "
        f"{tmp_path}/oxford_pets. Expected layout under DATASET.ROOT: oxford_pets/images/*.jpg + "
        "oxford_pets/split_zhou_OxfordPets.json (or oxford_pets/annotations/{trainval,test}.txt "
        "to build it). Instructions: see DATASETS.md#oxfordpets."
    )


def test_offline_without_split_file_or_annotations_says_what_to_download(tmp_path, load, gdown_calls):
    make_oxford_pets(str(tmp_path))
    shutil.rmtree(tmp_path / "oxford_pets" / "annotations")
    msg = error_of(load, "OxfordPets", tmp_path)
    split = tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json"
    assert msg.startswith(
        f"OxfordPets: split file not found: {split}; could not download split_zhou_OxfordPets.json "
        "from https://drive.google.com/file/d/1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs/view (ConnectionError: "
        "Failed to resolve 'drive.google.com' (no network in tests)); download it by hand and put "
        f"it at {split}; it cannot be built from raw annotations either, missing: "
        f"{tmp_path}/oxford_pets/annotations/trainval.txt, {tmp_path}/oxford_pets/annotations/test.txt."
    )
    assert msg.endswith("Instructions: see DATASETS.md#oxfordpets.")
    assert [c["id"] for c in gdown_calls] == ["1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"]
    assert sorted(os.listdir(tmp_path / "oxford_pets")) == ["images"]  # no partial download left


def test_wrong_class_count_from_folders(tmp_path, load):
    make_dtd(str(tmp_path))
    shutil.rmtree(tmp_path / "dtd" / "images" / "zigzagged")
    msg = error_of(load, "DescribableTextures", tmp_path)
    assert ("expected 47 classes but the split built by DescribableTextures.build_split() has 46. "
            "Expected layout under DATASET.ROOT: dtd/images/<texture>/*.jpg") in msg
    assert not (tmp_path / "dtd" / "split_zhou_DescribableTextures.json").exists()  # never saved


def _edit_split(path, edit):
    with open(path) as f:
        split = json.load(f)
    edit(split)
    with open(path, "w") as f:
        json.dump(split, f)


def test_wrong_class_count_and_empty_split_in_split_file(tmp_path, load):
    make_oxford_pets(str(tmp_path))
    load("OxfordPets", tmp_path)
    path = tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json"

    def drop_last_class(split):
        for k in split:
            split[k] = [row for row in split[k] if row[1] != 36]

    _edit_split(path, drop_last_class)
    assert f"expected 37 classes but {path} has 36" in error_of(load, "OxfordPets", tmp_path)
    _edit_split(path, lambda split: split.update(test=[]))
    assert f"the test split is empty in {path}" in error_of(load, "OxfordPets", tmp_path)


def test_malformed_annotation_line(tmp_path, load):
    make_oxford_pets(str(tmp_path))
    path = tmp_path / "oxford_pets" / "annotations" / "trainval.txt"
    lines = path.read_text().splitlines()
    lines[2] = "Abyssinian_3 1 1"
    path.write_text("\n".join(lines) + "\n")
    assert (f"line 3 of {path} should be '<Breed>_<n> <class id> <species> <breed id>'; "
            "got 'Abyssinian_3 1 1'") in error_of(load, "OxfordPets", tmp_path)


def test_unknown_aircraft_variant(tmp_path, load):
    make_fgvc_aircraft(str(tmp_path))
    path = tmp_path / "fgvc_aircraft" / "images_variant_test.txt"
    path.write_text(path.read_text().replace("1000400 Yak-42", "1000400 Yak-43"))
    assert (f"line 100 of {path} should be '<image id> <variant from variants.txt>'; "
            "got '1000400 Yak-43'") in error_of(load, "FGVCAircraft", tmp_path)


def test_missing_annotation_file(tmp_path, load):
    make_fgvc_aircraft(str(tmp_path))
    os.remove(tmp_path / "fgvc_aircraft" / "variants.txt")
    assert error_of(load, "FGVCAircraft", tmp_path) == (
        f"FGVCAircraft: annotation file not found: {tmp_path}/fgvc_aircraft/variants.txt. Expected "
        "layout under DATASET.ROOT: fgvc_aircraft/images/<id>.jpg + fgvc_aircraft/variants.txt + "
        "fgvc_aircraft/images_variant_{train,val,test}.txt. Instructions: see DATASETS.md#fgvcaircraft."
    )


def test_imagenet_missing_class_folder(tmp_path, load):
    make_imagenet(str(tmp_path))
    val = tmp_path / "imagenet" / "images" / "val"
    shutil.rmtree(val / "n01443537")
    assert (f"{val} should hold the 1000 class folders named by classnames.txt; 1 missing "
            "['n01443537'], 0 unexpected []") in error_of(load, "ImageNet", tmp_path)


def test_imagenet_flat_val_folder(tmp_path, load):
    make_imagenet(str(tmp_path))
    val = tmp_path / "imagenet" / "images" / "val"
    for wnid, _ in IMAGENET:
        for name in os.listdir(val / wnid):
            os.rename(val / wnid / name, val / name)
        os.rmdir(val / wnid)
    assert (f"{val} holds no class folders but 1000 other entries (e.g. "
            "'ILSVRC2012_val_00000001.JPEG'): images must sit in one folder per class. "
            "Expected layout under DATASET.ROOT: imagenet/images/{train,val}/<wnid>/*.JPEG + "
            "imagenet/classnames.txt. Instructions: see DATASETS.md#imagenet.") in error_of(
                load, "ImageNet", tmp_path)


def test_imagenet_empty_class_folder(tmp_path, load):
    make_imagenet(str(tmp_path))
    train = tmp_path / "imagenet" / "images" / "train"
    for name in os.listdir(train / "n15075141"):
        os.remove(train / "n15075141" / name)
    assert f"1 class folders of {train} are empty: ['n15075141']" in error_of(load, "ImageNet", tmp_path)


def test_imagenet_classnames_offline(tmp_path, load, gdown_calls):
    make_imagenet(str(tmp_path))
    path = tmp_path / "imagenet" / "classnames.txt"
    os.remove(path)
    assert (f"classnames.txt not found at {path}; could not download classnames.txt from "
            "https://drive.google.com/file/d/1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF/view (ConnectionError: "
            "Failed to resolve 'drive.google.com' (no network in tests)); download it by hand and "
            f"put it at {path}") in error_of(load, "ImageNet", tmp_path)


def test_imagenet_a_unknown_and_missing_classes(tmp_path, load):
    make_imagenet_a(str(tmp_path))
    image_dir = tmp_path / "imagenet-adversarial" / "imagenet-a"
    os.rename(image_dir / "n01443537", image_dir / "n99999999")
    assert (f"class folders of {image_dir} not named in classnames.txt: ['n99999999'] (1 in all)"
            in error_of(load, "ImageNetA", tmp_path))
    shutil.rmtree(image_dir / "n99999999")
    assert "expected 200 classes but the split built by ImageNetA.build_split() has 199" in error_of(
        load, "ImageNetA", tmp_path)


def test_imagenetv2_missing_numbered_folder(tmp_path, load):
    make_imagenetv2(str(tmp_path))
    image_dir = tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val"
    shutil.rmtree(image_dir / "999")
    assert f"{image_dir} should hold the 1000 class folders named by classnames.txt; 1 missing ['999']" \
        in error_of(load, "ImageNetV2", tmp_path)


def test_flowers_needs_scipy_only_to_build(tmp_path, load, monkeypatch):
    pytest.importorskip("scipy.io")
    from tests.datasets.miniatures import make_oxford_flowers

    make_oxford_flowers(str(tmp_path))
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # as if scipy were not installed
    mat = tmp_path / "oxford_flowers" / "imagelabels.mat"
    assert (f"building split_zhou_OxfordFlowers.json reads {mat}, which needs scipy (pip install "
            "scipy); or put the published split_zhou_OxfordFlowers.json in "
            f"{tmp_path}/oxford_flowers") in error_of(load, "OxfordFlowers", tmp_path)
    monkeypatch.undo()
    load("OxfordFlowers", tmp_path)  # builds and saves the split
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    assert load("OxfordFlowers", tmp_path).num_classes == 102  # reading it needs no scipy


def test_flowers_cat_to_name_offline(tmp_path, load, gdown_calls):
    pytest.importorskip("scipy.io")
    from tests.datasets.miniatures import make_oxford_flowers

    make_oxford_flowers(str(tmp_path))
    path = tmp_path / "oxford_flowers" / "cat_to_name.json"
    os.remove(path)
    assert (f"cat_to_name.json is needed to build split_zhou_OxfordFlowers.json: could not download "
            "cat_to_name.json from https://drive.google.com/file/d/1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0/"
            f"view (ConnectionError: Failed to resolve 'drive.google.com' (no network in tests)); "
            f"download it by hand and put it at {path}") in error_of(load, "OxfordFlowers", tmp_path)
