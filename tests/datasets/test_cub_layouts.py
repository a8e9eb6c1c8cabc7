"""CUB-200-2011 as users have it (official folder, the doubled CUB_200_2011/CUB_200_2011 folder,
KMnP/vpt's train/val/test JSON), tools/convert_cub.py, and the JSON readers of the other FGVC sets."""
import json
import os
import shutil

import pytest

from dassl_lite.data import DatasetLayoutError
from tests.datasets.miniatures import make_cub200


def split_keys(dataset):
    """(train, val, test) as sets of (path under the dataset's images/, label, classname)."""
    def keys(items):
        return {(os.path.relpath(d.impath, dataset.image_dir), d.label, d.classname) for d in items}
    return keys(dataset.train_x), keys(dataset.val), keys(dataset.test)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub_official")
    make_cub200(str(root))
    return root


def test_official_layout(official, load):
    ds = load("CUB200", official)
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (1000, 200, 400)
    assert ds.dataset_dir == str(official / "CUB_200_2011")
    assert ds.lab2cname[0] == "Black_footed_Albatross" and ds.lab2cname[199] == "Common_Yellowthroat"


def test_doubled_folder_is_found_without_moving_files(official, load, tmp_path):
    doubled = tmp_path / "CUB_200_2011"
    make_cub200(str(doubled))
    (doubled / "attributes.txt").write_text("1 has_bill_shape::curved\n")  # as the archive has
    ds = load("CUB200", tmp_path)
    assert ds.dataset_dir == str(doubled / "CUB_200_2011")
    assert split_keys(ds) == split_keys(load("CUB200", official))
    # DATASET.ROOT at the CUB folder itself (KMnP/vpt's DATAPATH) works too
    assert load("CUB200", doubled / "CUB_200_2011").dataset_dir == str(doubled / "CUB_200_2011")


def test_convert_cub_writes_the_split_that_the_reader_builds(official, load, tmp_path):
    from tools.convert_cub import convert

    cub_copy(official, tmp_path)  # without the split_zhou file an earlier load wrote
    paths = convert(str(tmp_path))
    with open(paths["train"]) as f:
        train = json.load(f)
    assert len(train) == 1000 and train["001.Black_footed_Albatross/Black_footed_Albatross_0000_1.jpg"] == 1
    with pytest.raises(Exception, match="pass --force to replace them"):
        convert(str(tmp_path))
    # the JSON files now define the split: the same one as the official files give
    from_json = load("CUB200", tmp_path)
    assert from_json.split_source.endswith("train.json / val.json")
    assert split_keys(from_json) == split_keys(load("CUB200", official))


def test_vpt_json_with_windows_paths_zero_based_ids_and_no_test_json(official, load, tmp_path):
    """A hand-written split (the founding document's script): absolute Windows paths, class ids
    from 0, no test.json: labels follow the ids, test comes from the official files."""
    shutil.copytree(official / "CUB_200_2011", tmp_path / "CUB_200_2011")
    folder = tmp_path / "CUB_200_2011"
    ref = load("CUB200", official)
    for name, items in (("train", ref.train_x), ("val", ref.val)):
        rows = {"C:\\Users\\me\\CUB_200_2011\\images\\" + os.path.relpath(d.impath, ref.image_dir)
                .replace("/", "\\"): d.label for d in items}
        (folder / f"{name}.json").write_text(json.dumps(rows))
    ds = load("CUB200", tmp_path)
    assert split_keys(ds) == split_keys(ref)
    assert os.path.isfile(ds.train_x[0].impath.replace(str(folder), str(official / "CUB_200_2011")))


def test_json_class_ids_must_be_integers(official, load, tmp_path):
    shutil.copytree(official / "CUB_200_2011", tmp_path / "CUB_200_2011")
    folder = tmp_path / "CUB_200_2011"
    (folder / "train.json").write_text(json.dumps({"001.A/x.jpg": "albatross"}))
    (folder / "val.json").write_text(json.dumps({"001.A/y.jpg": 1}))
    with pytest.raises(DatasetLayoutError, match="class id of '001.A/x.jpg' must be an integer; "
                                                 "got 'albatross'"):
        load("CUB200", tmp_path)


def write_splits(folder, image_dir, rows):
    """The JSON files of ``rows`` ({split: {path: id}}) and an empty file for every image."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, mapping in rows.items():
        (folder / f"{split}.json").write_text(json.dumps(mapping))
        for path in mapping:
            image = folder / image_dir / path.replace("images/", "", 1)
            image.parent.mkdir(parents=True, exist_ok=True)
            image.touch()


def test_nabirds_and_dogs_read_vpt_split_files(load, tmp_path):
    base = tmp_path / "stanford_dogs"
    rows = {s: {f"n0208{c}-Breed{c}/img_{s}_{i}.jpg": c for c in range(120) for i in range(2)}
            for s in ("train", "val", "test")}
    write_splits(base, "Images", rows)
    dogs = load("StanfordDogs", tmp_path)
    assert (len(dogs.train_x), len(dogs.val), len(dogs.test)) == (240, 240, 240)
    assert dogs.lab2cname[5] == "Breed5"
    nab = tmp_path / "nabirds"
    write_splits(nab, "images", {"train": {f"images/{c:04d}/a.jpg": c for c in range(555)},
                                 "val": {f"{c:04d}/b.jpg": c for c in range(555)}})
    with pytest.raises(DatasetLayoutError, match="test.json not found"):
        load("NABirds", tmp_path)
    write_splits(nab, "images", {"test": {f"{c:04d}/c.jpg": c for c in range(555)}})
    (nab / "classes.txt").write_text("0 Bird zero\n554 Last bird\n")
    birds = load("NABirds", tmp_path)
    assert birds.train_x[0].impath == str(nab / "images" / "0000" / "a.jpg")
    assert birds.lab2cname[0] == "Bird zero" and birds.lab2cname[1] == "0001"


# ------------------------------------------------------------ partial or overlapping JSON splits
def cub_copy(official, tmp_path):
    """A copy of the official miniature (no split_zhou file) and its CUB folder."""
    folder = tmp_path / "CUB_200_2011"
    shutil.copytree(official / "CUB_200_2011", folder)
    if (folder / "split_zhou_CUB200.json").exists():
        os.remove(folder / "split_zhou_CUB200.json")
    return folder


def test_train_and_test_json_without_val_json_is_an_error(official, load, tmp_path):
    """No silent fall back to the official split (or a split_zhou file left by an earlier run)."""
    from tools.convert_cub import convert

    folder = cub_copy(official, tmp_path)
    load("CUB200", tmp_path)  # writes split_zhou_CUB200.json, which must not be used below
    convert(str(tmp_path), out=str(tmp_path / "written"))
    for name in ("train", "test"):
        shutil.copy(tmp_path / "written" / f"{name}.json", folder)
    with pytest.raises(DatasetLayoutError) as info:
        load("CUB200", tmp_path)
    message = str(info.value)
    assert (f"split file val.json not found in {folder} (found only train.json, test.json)"
            in message)
    assert ("KMnP/vpt's split needs train.json and val.json (test.json optional: else the "
            "official test split (train_test_split.txt)); add the missing file") in message
    assert "tools/convert_cub.py" in message and "CUB_200_2011/{train,val}.json" in message
    os.remove(folder / "train.json")  # test.json alone: the same error, naming both
    with pytest.raises(DatasetLayoutError, match="split file train.json and val.json not found"):
        load("CUB200", tmp_path)


def test_a_json_only_cub_folder_without_val_json_names_it(official, load, tmp_path):
    """KMnP/vpt's DATAPATH layout: images/ and the JSON files, no official annotation files."""
    folder = tmp_path / "cub"
    (folder / "images").mkdir(parents=True)
    (folder / "train.json").write_text(json.dumps({"001.A/x.jpg": 1}))
    with pytest.raises(DatasetLayoutError, match=r"split file val.json not found in .*cub "
                                                 r"\(found only train.json\)"):
        load("CUB200", folder)


def test_test_json_sharing_images_with_train_json_is_an_error(official, load, tmp_path):
    from tools.convert_cub import convert

    folder = cub_copy(official, tmp_path)
    paths = convert(str(tmp_path))
    with open(paths["train"]) as f:
        train = json.load(f)
    with open(paths["test"]) as f:
        test = json.load(f)
    leaked = sorted(train)[:4]
    test.update({"C:\\data\\CUB_200_2011\\images\\" + p.replace("/", "\\"): train[p]
                 for p in leaked})
    (folder / "test.json").write_text(json.dumps(test))
    with pytest.raises(DatasetLayoutError) as info:
        load("CUB200", tmp_path)
    message = str(info.value)
    assert (f"{folder / 'train.json'} and {folder / 'test.json'} share 4 image(s), "
            f"e.g. {leaked[0]}, {leaked[1]}, {leaked[2]}; an image may be in the train or the test "
            "split, not both") in message


def test_no_test_json_tests_on_the_official_split_with_a_warning_and_checks_it(
        official, load, tmp_path, caplog):
    folder = cub_copy(official, tmp_path)
    ref = load("CUB200", official)
    rows = {name: {os.path.relpath(d.impath, ref.image_dir): d.label + 1 for d in items}
            for name, items in (("train", ref.train_x), ("val", ref.val))}
    for name, mapping in rows.items():
        (folder / f"{name}.json").write_text(json.dumps(mapping))
    with caplog.at_level("WARNING"):
        ds = load("CUB200", tmp_path)
    assert len(ds.test) == 400
    assert (f"no test.json in {folder}; testing on the official test split "
            "(train_test_split.txt) (400 images)") in caplog.text
    official_test = os.path.relpath(ref.test[0].impath, ref.image_dir)
    rows["train"][official_test] = ref.test[0].label + 1
    (folder / "train.json").write_text(json.dumps(rows["train"]))
    with pytest.raises(DatasetLayoutError, match=(
            rf"train.json and the official test split \(train_test_split.txt\) share 1 "
            rf"image\(s\), e.g. {official_test}")):
        load("CUB200", tmp_path)


def test_train_json_sharing_images_with_val_json_warns(official, load, tmp_path, caplog):
    folder = cub_copy(official, tmp_path)
    ref = load("CUB200", official)
    rows = {name: {os.path.relpath(d.impath, ref.image_dir): d.label + 1 for d in items}
            for name, items in (("train", ref.train_x + ref.val[:2]), ("val", ref.val),
                                ("test", ref.test))}
    for name, mapping in rows.items():
        (folder / f"{name}.json").write_text(json.dumps(mapping))
    with caplog.at_level("WARNING"):
        ds = load("CUB200", tmp_path)
    assert len(ds.train_x) == 1002
    assert (f"{folder / 'train.json'} and {folder / 'val.json'} share 2 image(s)") in caplog.text
    assert "validation accuracy then counts training images" in caplog.text


@pytest.mark.parametrize("text, expected", [
    ('{"001.A/x.jpg": 1, "001.A/x.jpg": 2}', "lists '001.A/x.jpg' more than once"),
    ('{"001.A/x.jpg": 1, "images/001.A/x.jpg": 1}',
     "lists the image 001.A/x.jpg twice (as '001.A/x.jpg' and 'images/001.A/x.jpg')"),
    ("{}", "must map image paths to class ids ({\"<image path>\": <class id>}); got an empty "
           "mapping"),
    ('["001.A/x.jpg"]', "got list"),
    ('{"001.A/x.jpg": 1', "is not valid JSON"),
])
def test_malformed_json_split_files_name_the_file(load, tmp_path, text, expected):
    """The same checks hold for every dataset read through the JSON path (NABirds here)."""
    base = tmp_path / "nabirds"
    write_splits(base, "images", {"val": {"0000/b.jpg": 0}, "test": {"0000/c.jpg": 0}})
    (base / "train.json").write_text(text)
    with pytest.raises(DatasetLayoutError) as info:
        load("NABirds", tmp_path)
    assert str(base / "train.json") in str(info.value) and expected in str(info.value)


def test_other_fgvc_sets_refuse_partial_and_overlapping_json(load, tmp_path):
    base = tmp_path / "stanford_dogs"
    rows = {s: {f"n0208{c}-Breed{c}/img_{s}_{i}.jpg": c for c in range(120) for i in range(2)}
            for s in ("train", "test")}
    write_splits(base, "Images", rows)
    with pytest.raises(DatasetLayoutError, match=r"split file val.json not found in "
                                                 r".*stanford_dogs \(found only train.json, "
                                                 r"test.json\)"):
        load("StanfordDogs", tmp_path)
    rows["val"] = {f"n0208{c}-Breed{c}/img_val.jpg": c for c in range(120)}
    rows["test"]["Images/n02080-Breed0/img_train_0.jpg"] = 0
    write_splits(base, "Images", rows)
    with pytest.raises(DatasetLayoutError, match=r"stanford_dogs/train.json and .*stanford_dogs/"
                                                 r"test.json share 1 image\(s\), e.g. "
                                                 r"n02080-Breed0/img_train_0.jpg"):
        load("StanfordDogs", tmp_path)


@pytest.mark.parametrize("fraction, expected", [
    ("0", "--val-fraction must lie strictly between 0 and 1 (the share of each class's official "
          "train images kept for val); got 0.0"),
    ("1", "--val-fraction must lie strictly between 0 and 1"),
    ("-0.1", "got -0.1"),
    ("nan", "got nan"),
    ("0.0001", "--val-fraction 0.0001 leaves class 001.Black_footed_Albatross (6 official train "
               "images) with 0 val and 6 train images; every class needs at least one of each"),
    ("0.99", "with 6 val and 0 train images"),
])
def test_convert_cub_refuses_a_val_fraction_outside_0_1(official, tmp_path, caplog, fraction,
                                                        expected):
    from tools.convert_cub import main

    out = tmp_path / "out"
    assert main(["--root", str(official), "--out", str(out), "--val-fraction", fraction]) == 2
    assert expected in caplog.text
    assert not out.exists()  # nothing written
