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

    shutil.copytree(official / "CUB_200_2011", tmp_path / "CUB_200_2011")
    folder = tmp_path / "CUB_200_2011"
    os.remove(folder / "split_zhou_CUB200.json")  # written by test_official_layout's load
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
