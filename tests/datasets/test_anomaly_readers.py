"""MVTecAD, VisA and the meta.json option on miniatures built in the exact layouts."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import datasets  # noqa: F401  (registers the datasets)
from dassl_lite.config import ConfigError, get_cfg_default
from dassl_lite.data import DataManager, DatasetLayoutError, ImageReadError
from dassl_lite.registry import DATASET_REGISTRY
from tests.datasets.anomaly_miniatures import make_folder, make_mvtec, make_visa, rgb, save


def cfg_for(name, root, *opts):
    cfg = get_cfg_default()
    cfg.DATASET.NAME, cfg.DATASET.ROOT = name, str(root)
    cfg.INPUT.SIZE = (16, 24)
    cfg.INPUT.TRANSFORMS = ()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.VERBOSE = False
    cfg.merge_from_list(list(opts))
    return cfg


def build(name, root, *opts):
    return DATASET_REGISTRY.get(name)(cfg_for(name, root, *opts))


def test_mvtec_layout(tmp_path):
    make_mvtec(tmp_path)
    ds = build("MVTecAD", tmp_path)
    assert ds.task == "anomaly" and ds.categories == ["bottle", "wood"]
    assert len(ds.train_x) == 4 and all(d.label == 0 for d in ds.train_x)
    assert [(d.category, d.defect, d.label) for d in ds.test] == [
        ("bottle", "broken", 1), ("bottle", "broken", 1), ("bottle", "crack", 1),
        ("bottle", "", 0), ("bottle", "", 0), ("wood", "", 0), ("wood", "hole", 1)]
    crack = ds.test[2]
    assert crack.mask_path == str(tmp_path / "mvtec/bottle/ground_truth/crack/000_mask.png")
    assert ds.classnames == ["normal", "anomalous"] and ds.num_classes == 2


def test_mvtec_missing_mask_and_wrong_layout_name_the_path(tmp_path):
    base = make_mvtec(tmp_path)
    os.remove(f"{base}/bottle/ground_truth/broken/001_mask.png")
    with pytest.raises(DatasetLayoutError, match=r"MVTecAD: mask file not found: .*/mvtec/bottle/"
                       r"ground_truth/broken/001_mask.png \(for test image bottle/test/broken/"
                       r"001.png\)\. Expected layout under DATASET.ROOT: mvtec/<category>/train/good"):
        build("MVTecAD", tmp_path)
    save(f"{base}/bottle/ground_truth/broken/001_mask.png", np.zeros((20, 30), np.uint8))
    os.makedirs(f"{base}/cable")
    with pytest.raises(DatasetLayoutError, match=r"category 'cable' has no train/ folder: .*/mvtec/cable/train"):
        build("MVTecAD", tmp_path)
    with pytest.raises(DatasetLayoutError, match=r"MVTecAD: dataset folder not found: .*/nowhere/mvtec"):
        build("MVTecAD", tmp_path / "nowhere")


def test_visa_layout_binarises_multi_id_masks(tmp_path):
    make_visa(tmp_path)
    cfg = cfg_for("VisA", tmp_path)
    dm = DataManager(cfg)
    ds = dm.dataset
    assert len(ds.train_x) == 2 and [d.label for d in ds.test] == [0, 1, 1]
    item = dm.test_loader.dataset[1]
    assert item["img"].shape == (3, 16, 24) and item["mask"].shape == (1, 16, 24)
    assert item["category"] == "candle" and item["label"] == 1
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    full = torch.zeros(20, 30)  # ids 1, 2 and 3 all count as defect
    full[2:6, 2:6] = full[10:14, 20:24] = full[15:18, 5:8] = 1
    expected = torch.nn.functional.interpolate(full[None, None], size=(16, 24), mode="bilinear",
                                               align_corners=False)[0] >= 0.5
    assert torch.equal(item["mask"].bool(), expected)
    assert dm.test_loader.dataset[0]["mask"].sum() == 0  # a normal image: empty mask


def test_visa_missing_mask_file_is_a_clear_error(tmp_path):
    base = make_visa(tmp_path)
    os.remove(os.path.join(base, "candle/Data/Masks/Anomaly/001.png"))
    dm = DataManager(cfg_for("VisA", tmp_path))
    with pytest.raises(ImageReadError, match=r"Cannot read mask .*/visa/candle/Data/Masks/Anomaly/001.png "
                       r"\(the mask of image .*/Images/Anomaly/001.JPG\): file not found"):
        dm.test_loader.dataset[2]


def test_visa_bad_csv(tmp_path):
    base = make_visa(tmp_path)
    with open(os.path.join(base, "split_csv", "1cls.csv"), "a") as f:
        f.write("candle,val,normal,x.JPG,\n")
    with pytest.raises(DatasetLayoutError, match=r"1cls.csv line 7: expected object,train\|test,normal\|anomaly,image,mask; got \['candle', 'val'"):
        build("VisA", tmp_path)
    os.remove(os.path.join(base, "split_csv", "1cls.csv"))
    with pytest.raises(DatasetLayoutError, match=r"VisA: split file not found: .*/visa/split_csv/1cls.csv\. Expected layout"):
        build("VisA", tmp_path)


def test_meta_json_option(tmp_path):
    base = make_mvtec(tmp_path)
    meta = {"train": {"bottle": [{"img_path": "bottle/train/good/000.png", "mask_path": "",
                                  "cls_name": "bottle", "specie_name": "good", "anomaly": 0}]},
            "test": {"bottle": [
                {"img_path": "bottle/test/good/000.png", "mask_path": "", "cls_name": "bottle",
                 "specie_name": "good", "anomaly": 0},
                {"img_path": "bottle/test/broken/000.png", "cls_name": "bottle",
                 "mask_path": "bottle/ground_truth/broken/000_mask.png",
                 "specie_name": "broken", "anomaly": 1}]}}
    with open(os.path.join(base, "meta.json"), "w") as f:
        json.dump(meta, f)
    ds = build("MVTecAD", tmp_path, "DATASET.ANOMALY.META_FILE", "meta.json")
    assert len(ds.train_x) == 1 and [d.label for d in ds.test] == [0, 1]
    assert ds.test[1].mask_path == os.path.join(base, "bottle/ground_truth/broken/000_mask.png")
    assert ds.test[1].defect == "broken" and os.path.isfile(ds.test[1].impath)
    del meta["test"]["bottle"][1]["anomaly"]
    with open(os.path.join(base, "meta.json"), "w") as f:
        json.dump(meta, f)
    with pytest.raises(DatasetLayoutError, match=r"meta.json: test/bottle\[1\] lacks \['anomaly'\]"):
        build("MVTecAD", tmp_path, "DATASET.ANOMALY.META_FILE", "meta.json")


def test_train_split_categories_and_shots(tmp_path):
    make_mvtec(tmp_path)
    on_test = build("MVTecAD", tmp_path, "DATASET.ANOMALY.TRAIN_SPLIT", "test")
    assert on_test.train_x == on_test.test
    bottle = build("MVTecAD", tmp_path, "DATASET.ANOMALY.CATEGORIES", "('bottle',)")
    assert bottle.categories == ["bottle"] and len(bottle.train_x) == 3
    shots = [build("MVTecAD", tmp_path, "DATASET.NUM_SHOTS", "2", "SEED", str(s)) for s in (1, 1, 2)]
    assert shots[0].train_x == shots[1].train_x
    assert [len(s.references(c)) for s in shots[:1] for c in ("bottle", "wood")] == [2, 1]
    draws = {tuple(d.impath for d in build("MVTecAD", tmp_path, "DATASET.NUM_SHOTS", "1",
                                           "SEED", str(s)).references("bottle")) for s in range(8)}
    assert len(draws) > 1  # the seed picks the references
    with pytest.raises(ConfigError, match=r"DATASET.ANOMALY.CATEGORIES \['cable'\] not found; categories: \['bottle', 'wood'\]"):
        build("MVTecAD", tmp_path, "DATASET.ANOMALY.CATEGORIES", "('cable',)")
    with pytest.raises(ConfigError, match="TRAIN_SPLIT must be one of train, test; got 'val'"):
        build("MVTecAD", tmp_path, "DATASET.ANOMALY.TRAIN_SPLIT", "val")


# ---------------------------------------------------------------- issue 26: masks that lie
def test_mask_of_another_size_names_both_files(tmp_path):
    base = make_mvtec(tmp_path)
    save(f"{base}/bottle/ground_truth/crack/000_mask.png", np.zeros((10, 15), np.uint8))
    dm = DataManager(cfg_for("MVTecAD", tmp_path))
    crack = [i for i, d in enumerate(dm.dataset.test) if d.defect == "crack"][0]
    with pytest.raises(ImageReadError, match=r"Mask .*/mvtec/bottle/ground_truth/crack/000_mask.png is "
                       r"15x10 pixels but its image .*/mvtec/bottle/test/crack/000.png is 30x20 "
                       r"\(width x height\): a mask must have its image's size"):
        dm.test_loader.dataset[crack]


def test_grey_level_mask_in_mvtec_is_refused_at_load(tmp_path):
    base = make_mvtec(tmp_path)
    soft = np.zeros((20, 30), np.uint8)
    soft[5:10, 10:20], soft[4, 10:20] = 255, 128  # an antialiased edge
    save(f"{base}/wood/ground_truth/hole/000_mask.png", soft)
    dm = DataManager(cfg_for("MVTecAD", tmp_path))
    with pytest.raises(ImageReadError, match=r"Mask .*/wood/ground_truth/hole/000_mask.png \(the mask of "
                       r"image .*/wood/test/hole/000.png\) holds the values \{0, 128, 255\}"):
        dm.test_loader.dataset[len(dm.dataset.test) - 1]


def test_visa_normal_row_with_a_mask_is_an_error(tmp_path):
    base = make_visa(tmp_path)
    path = os.path.join(base, "split_csv", "1cls.csv")
    lines = open(path).read().splitlines()
    lines[3] = lines[3] + "candle/Data/Masks/Anomaly/000.png"  # candle,test,normal,...,<mask>
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(DatasetLayoutError, match=r"1cls.csv line 4: normal image candle/Data/Images/"
                       r"Normal/0002.JPG has a defect mask candle/Data/Masks/Anomaly/000.png; normal "
                       r"rows take an empty mask column"):
        build("VisA", tmp_path)


def test_meta_json_normal_entry_with_a_mask_is_an_error(tmp_path):
    base = make_mvtec(tmp_path)
    meta = {"test": {"bottle": [
        {"img_path": "bottle/test/good/000.png", "cls_name": "bottle", "specie_name": "good",
         "mask_path": "bottle/ground_truth/broken/000_mask.png", "anomaly": 0}]}}
    with open(os.path.join(base, "meta.json"), "w") as f:
        json.dump(meta, f)
    with pytest.raises(DatasetLayoutError, match=r"meta file .*/meta.json: test/bottle\[0\] is a normal "
                       r"image \(bottle/test/good/000.png, \"anomaly\": 0\) with a defect mask "
                       r"bottle/ground_truth/broken/000_mask.png"):
        build("MVTecAD", tmp_path, "DATASET.ANOMALY.META_FILE", "meta.json")


def test_normal_record_with_defect_pixels_is_refused_at_load(tmp_path):
    from dassl_lite.data.anomaly import AnomalyDatum

    base = make_mvtec(tmp_path)
    dm = DataManager(cfg_for("MVTecAD", tmp_path))
    wrapper = dm.test_loader.dataset
    good = os.path.join(base, "bottle/test/good/000.png")
    mask = os.path.join(base, "bottle/ground_truth/broken/000_mask.png")
    wrapper.data_source = [AnomalyDatum(good, 0, "bottle", "", mask)]
    with pytest.raises(ImageReadError, match=r"Normal image .*/bottle/test/good/000.png \(category "
                       r"'bottle'\) has a defect mask .*/broken/000_mask.png with defect pixels"):
        wrapper[0]
    save(os.path.join(base, "empty_mask.png"), np.zeros((20, 30), np.uint8))
    wrapper.data_source = [AnomalyDatum(good, 0, "bottle", "", os.path.join(base, "empty_mask.png"))]
    assert wrapper[0]["mask"].sum() == 0 and wrapper[0]["has_mask"]  # an empty mask is harmless


# ---------------------------------------------------------------- issue 28: own data, anomalib names
def test_anomaly_folder_one_category_with_masks(tmp_path):
    root = make_folder(tmp_path / "screws")
    ds = build("AnomalyFolder", root, "DATASET.ANOMALY.FOLDER.MASK_DIR", "masks")
    assert ds.categories == ["screws"]
    assert len(ds.train_x) == 4 and all(d.label == 0 for d in ds.train_x)  # 5 normal, 1 held out
    assert [d.label for d in ds.test] == [0, 1, 1]
    assert not {d.impath for d in ds.train_x} & {d.impath for d in ds.test}
    assert ds.test[1].mask_path == os.path.join(root, "masks", "000_mask.png")
    assert ds.test[1].defect == "bad"
    again = build("AnomalyFolder", root, "DATASET.ANOMALY.FOLDER.MASK_DIR", "masks", "SEED", "7")
    assert again.test == ds.test  # the held-out normals do not depend on the seed
    dm = DataManager(cfg_for("AnomalyFolder", root, "DATASET.ANOMALY.FOLDER.MASK_DIR", "masks"))
    item = dm.test_loader.dataset[1]
    assert item["mask"].sum() > 0 and item["has_mask"]


def test_anomaly_folder_per_category_normal_test_dir_and_no_masks(tmp_path):
    for cat in ("nut", "washer"):
        make_folder(tmp_path / cat, normal=3, abnormal=1, masks=False)
        save(f"{tmp_path}/{cat}/test_good/000.png", rgb(40))
    os.makedirs(tmp_path / "notes")  # not a category: skipped with a warning
    ds = build("AnomalyFolder", tmp_path, "DATASET.ANOMALY.FOLDER.NORMAL_TEST_DIR", "test_good")
    assert ds.categories == ["nut", "washer"] and len(ds.train_x) == 6
    assert [(d.category, d.label, d.mask_path) for d in ds.test] == [
        ("nut", 0, ""), ("nut", 1, ""), ("washer", 0, ""), ("washer", 1, "")]
    dm = DataManager(cfg_for("AnomalyFolder", tmp_path,
                             "DATASET.ANOMALY.FOLDER.NORMAL_TEST_DIR", "test_good"))
    item = dm.test_loader.dataset[1]  # evaluation without masks: image metrics only
    assert item["label"] == 1 and not item["has_mask"] and item["mask"].sum() == 0
    train_on_test = DataManager(cfg_for("AnomalyFolder", tmp_path, "DATASET.ANOMALY.TRAIN_SPLIT", "test",
                                        "DATASET.ANOMALY.FOLDER.NORMAL_TEST_DIR", "test_good"))
    with pytest.raises(ImageReadError, match=r"Anomalous image .*/nut/bad/000.png has no mask path "
                       r"\(category 'nut', defect 'bad'; training on anomalous images needs masks\)"):
        train_on_test.train_loader_x.dataset[1]


def test_anomaly_folder_layout_errors_name_paths(tmp_path):
    root = make_folder(tmp_path / "parts", mask_name="{stem}.png")
    assert build("AnomalyFolder", root, "DATASET.ANOMALY.FOLDER.MASK_DIR", "masks").test[1].mask_path.endswith("masks/000.png")
    os.remove(f"{root}/masks/001.png")
    with pytest.raises(DatasetLayoutError, match=r"AnomalyFolder: no mask for anomalous image .*/parts/bad/001.png "
                       r"in .*/parts/masks: expected one file named 001.png or 001_<anything>.png "
                       r"\(DATASET.ANOMALY.FOLDER.MASK_DIR\)"):
        build("AnomalyFolder", root, "DATASET.ANOMALY.FOLDER.MASK_DIR", "masks")
    with pytest.raises(DatasetLayoutError, match=r"DATASET.ANOMALY.FOLDER.MASK_DIR folder not found: "
                       r".*/parts/segmentations \(masks of the 2 anomalous images beside .*/parts/bad/000.png\)"):
        build("AnomalyFolder", root, "DATASET.ANOMALY.FOLDER.MASK_DIR", "segmentations")
    with pytest.raises(DatasetLayoutError, match=r"AnomalyFolder: no normal image folder: neither .*/parts/ok "
                       r"nor .*/parts/<category>/ok exists \(DATASET.ANOMALY.FOLDER.NORMAL_DIR='ok'\)"):
        build("AnomalyFolder", root, "DATASET.ANOMALY.FOLDER.NORMAL_DIR", "ok")
    with pytest.raises(DatasetLayoutError, match=r"DATASET.ANOMALY.FOLDER.NORMAL_TEST_DIR folder not found: .*/parts/good_test"):
        build("AnomalyFolder", root, "DATASET.ANOMALY.FOLDER.NORMAL_TEST_DIR", "good_test")
    with pytest.raises(ConfigError, match=r"DATASET.ANOMALY.FOLDER.NORMAL_SPLIT_RATIO must be in \[0, 1\); got 1.5"):
        build("AnomalyFolder", root, "DATASET.ANOMALY.FOLDER.NORMAL_SPLIT_RATIO", "1.5")


@pytest.mark.parametrize("name", ["MVTec", "MVTecAD", "mvtec_anomaly_detection"])
def test_mvtec_under_anomalib_and_archive_folder_names(tmp_path, name, caplog):
    os.rename(make_mvtec(tmp_path), tmp_path / name)
    with caplog.at_level("INFO"):
        ds = build("MVTecAD", tmp_path)
    assert ds.categories == ["bottle", "wood"] and ds.test[0].impath.startswith(str(tmp_path / name))
    assert f"MVTecAD: reading {tmp_path / name} ({tmp_path / 'mvtec'} is absent)" in caplog.text
    assert build("MVTecAD", tmp_path / name).categories == ["bottle", "wood"]  # ROOT = the folder


def test_mvtec_several_candidate_folders_is_an_error(tmp_path):
    base = make_mvtec(tmp_path)
    os.rename(base, tmp_path / "MVTecAD")
    os.makedirs(tmp_path / "mvtec_anomaly_detection")
    with pytest.raises(DatasetLayoutError, match=r"MVTecAD: several folders could hold MVTecAD: "
                       r".*/MVTecAD, .*/mvtec_anomaly_detection; rename the one to use to .*/mvtec"):
        build("MVTecAD", tmp_path)


@pytest.mark.parametrize("text, words", [
    ("[1, 2]", "must hold {'train': {category: [entry, ...]}, 'test': {category: [entry, ...]}}; "
               "got a JSON list"),
    ('{"train": {}, "test": []}', "'test' must map category names to lists of entries"),
    ('{"train": {}, "test": {"bottle": 5}}', "test/bottle must be a list of entries; got int"),
    ('{"train": {}, "test": {"bottle": [5]}}', "test/bottle[0] must be an object with keys"),
    ('{"train": {}, "test": {"bottle": [{"img_path": "bottle/test/good/000.png", "mask_path": "",'
     ' "cls_name": "bottle", "specie_name": "good", "anomaly": 2}]}}',
     'test/bottle[0]: "anomaly" must be 0 (normal) or 1 (anomalous); got 2'),
    ('{"train": {}, "test": {"bottle": [{"img_path": "bottle/test/good/000.png", "mask_path": "",'
     ' "cls_name": "bottle", "specie_name": "good", "anomaly": "yes"}]}}',
     "\"anomaly\" must be 0 (normal) or 1 (anomalous); got 'yes'"),
    (None, "is a folder; expected a JSON file"),
])
def test_meta_json_of_the_wrong_shape_names_the_file_and_entry(text, words, tmp_path):
    base = make_mvtec(tmp_path)
    meta = os.path.join(base, "meta.json")
    if text is None:
        os.makedirs(meta)
    else:
        with open(meta, "w") as f:
            f.write(text)
    with pytest.raises(DatasetLayoutError) as e:
        build("MVTecAD", tmp_path, "DATASET.ANOMALY.META_FILE", "meta.json")
    assert f"meta file {meta}" in str(e.value) and words in str(e.value), str(e.value)
