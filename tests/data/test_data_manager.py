import logging
import os

import pytest
import torch
import torchvision.transforms as T

from dassl_lite.data import (
    DataManager, DatasetLayoutError, DatasetWrapper, Datum, ImageReadError, build_data_loader, read_image,
)

LOGGER = "dassl_lite.data.data_manager"


def test_data_manager_tiny(data_root, cfg_for, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    cfg = cfg_for(data_root, **{"DATASET.NUM_SHOTS": 4, "SEED": 1, "DATALOADER.TRAIN_X.BATCH_SIZE": 8,
                                "DATALOADER.TEST.BATCH_SIZE": 6})
    dm = DataManager(cfg)
    assert (dm.num_classes, dm.num_source_domains) == (5, 0)
    assert dm.classnames == ["apple", "bear", "cat", "dog", "eel"]
    assert dm.lab2cname == {0: "apple", 1: "bear", 2: "cat", 3: "dog", 4: "eel"}
    assert dm.train_loader_u is None
    assert isinstance(dm.tfm_train.transforms[0], T.RandomResizedCrop)
    assert isinstance(dm.tfm_test.transforms[0], T.Resize)
    assert len(dm.train_loader_x) == 2  # 20 images, batch 8, drop_last
    assert dm.train_loader_x.drop_last and not dm.test_loader.drop_last
    assert (len(dm.val_loader), len(dm.test_loader)) == (4, 3)  # 20 and 15 images, batch 6
    batch = next(iter(dm.train_loader_x))
    assert sorted(batch) == ["domain", "img", "impath", "index", "label"]
    assert batch["img"].shape == (8, 3, 16, 16) and batch["img"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (8,)
    assert all(os.path.isfile(p) for p in batch["impath"])
    test_batch = next(iter(dm.test_loader))
    assert test_batch["index"].tolist() == list(range(6))
    logs = [r.getMessage() for r in caplog.records]
    assert "train_x: drop_last (Dassl) leaves out 4 of 20 images every epoch (batch size 8)" in logs
    summary = next(m for m in logs if m.startswith("Dataset summary:"))
    rows = [line.split() for line in summary.splitlines()]
    for row in ("Dataset _DataTestTiny", "# classes 5", "# train_x 20", "# val 20", "# test 15"):
        assert row.split() in rows, row


def test_no_val_gives_none_loader(data_root, cfg_for):
    dm = DataManager(cfg_for(data_root, name="_DataTestTinyNoVal"))
    assert dm.val_loader is None
    table = dm.show_dataset_summary(dm.dataset.cfg)
    assert ["#", "val", "0", "(no", "val", "split)"] in [line.split() for line in table.splitlines()]


def test_train_order_reproducible_from_torch_seed(data_root, cfg_for):
    dm = DataManager(cfg_for(data_root, **{"DATALOADER.TRAIN_X.BATCH_SIZE": 10, "VERBOSE": False}))

    def epoch():
        return [i for b in dm.train_loader_x for i in b["index"].tolist()]

    torch.manual_seed(0)
    first = epoch()
    torch.manual_seed(0)
    assert epoch() == first and sorted(first) == list(range(30))


def test_wrapper_views_and_img0(data_root, cfg_for):
    cfg = cfg_for(data_root, **{"DATALOADER.K_TRANSFORMS": 2, "DATALOADER.RETURN_IMG0": True})
    items = [Datum(os.path.join(data_root, "tiny", "images", "cat", "test_0.png"), 2, 0, "cat")]
    tfm = T.Compose([T.Resize((4, 4)), T.ToTensor()])
    out = DatasetWrapper(cfg, items, transform=[tfm, tfm], is_train=True)[0]
    assert isinstance(out["img"], list) and len(out["img"]) == 2 and out["img2"][1].shape == (3, 4, 4)
    assert out["img0"].shape == (3, 16, 16)
    assert (out["label"], out["domain"], out["index"]) == (2, 0, 0)
    test_out = DatasetWrapper(cfg, items, transform=tfm, is_train=False)[0]
    assert test_out["img"].shape == (3, 4, 4)  # K_TRANSFORMS applies to training only
    with pytest.raises(ValueError, match="K_TRANSFORMS=2 needs a transform"):
        DatasetWrapper(cfg, items, transform=None, is_train=True)


def test_missing_and_corrupt_images(tmp_path, png_writer):
    missing = str(tmp_path / "gone.png")
    with pytest.raises(ImageReadError) as e:
        read_image(missing)
    assert str(e.value) == f"Cannot read image {missing}: file not found"
    assert e.value.filename == missing and isinstance(e.value, OSError)
    corrupt = tmp_path / "bad.png"
    corrupt.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match=f"Cannot read image {corrupt}: UnidentifiedImageError"):
        read_image(str(corrupt))
    truncated = tmp_path / "cut.png"
    png_writer(str(tmp_path / "full.png"), size=(64, 64))
    truncated.write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(ImageReadError, match=f"Cannot read image {truncated}: "):
        read_image(str(truncated))


def test_image_error_crosses_worker_processes(tmp_path, cfg_for, data_root):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    cfg = cfg_for(data_root, **{"DATALOADER.NUM_WORKERS": 1})
    loader = build_data_loader(cfg, data_source=[Datum(str(bad))], batch_size=1, tfm=T.ToTensor(), is_train=False)
    batches = iter(loader)
    try:
        with pytest.raises(ImageReadError, match=f"Cannot read image {bad}"):
            next(batches)
    finally:
        batches._shutdown_workers()  # left to __del__, torch waits 5 s for a worker that raised


def test_empty_split_is_a_clear_error(data_root, cfg_for):
    with pytest.raises(DatasetLayoutError, match="The train_x split of dataset '_DataTestTiny' is empty; nothing to load"):
        build_data_loader(cfg_for(data_root), data_source=[], split_name="train_x")
