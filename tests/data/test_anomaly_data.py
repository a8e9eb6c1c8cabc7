"""AnomalyDatum and the joint image/mask transform."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from dassl_lite.config import ConfigError, get_cfg_default
from dassl_lite.data import ImageReadError
from dassl_lite.data.anomaly import (AnomalyDatasetWrapper, AnomalyDatum, AnomalyTransform,
                                     draw_mosaic_records, mosaic_2x2, read_mask)


def test_record_is_cheap_immutable_and_picklable():
    d = AnomalyDatum("/nowhere/a.png", 1, "bottle", "broken", "/nowhere/a_mask.png")
    assert (d.label, d.classname, d.category, d.defect, d.domain) == (1, "anomalous", "bottle", "broken", 0)
    assert pickle.loads(pickle.dumps(d)) == d and hash(d) == hash(pickle.loads(pickle.dumps(d)))
    assert d != AnomalyDatum("/nowhere/a.png", 1, "bottle", "crack", "/nowhere/a_mask.png")
    assert AnomalyDatum("/x.png", 0, "wood").mask_path == ""
    with pytest.raises(AttributeError):
        d.label = 0
    with pytest.raises(ValueError, match="label must be 0 .normal. or 1 .anomalous.; got 2"):
        AnomalyDatum("/x.png", 2, "wood")
    with pytest.raises(ValueError, match="category must be a non-empty str; got ''"):
        AnomalyDatum("/x.png", 0, "")


def square_pair(size=40):
    img = np.zeros((size, size, 3), np.uint8)
    img[10:20, 24:34] = 255
    mask = np.zeros((size, size), np.uint8)
    mask[10:20, 24:34] = 255
    return Image.fromarray(img), Image.fromarray(mask)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
def test_mask_follows_the_image(mode):
    img, mask = square_pair()
    tfm = AnomalyTransform((20, 20), "bilinear", mode)
    image, m = tfm(img, mask)
    assert image.shape == (3, 20, 20) and m.shape == (1, 20, 20)
    assert set(m.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(m[0].nonzero().amin(0), torch.tensor([5, 12]))
    assert torch.equal(m[0].nonzero().amax(0), torch.tensor([9, 16]))
    assert (image[0][m[0] > 0] > 0.7).all() and (image[0][m[0] == 0] < 0.3).all()  # aligned


def test_pil_bicubic_mask_is_upstreams_float_mask_to_the_last_bit(tmp_path):
    """AF-CLIP's reference: Resize((H, W), BICUBIC) on the PIL 0/255 mask, then ToTensor; the
    float result is kept (anomalous where > 0.5 downstream)."""
    rng = np.random.default_rng(0)
    ids = np.zeros((130, 150), np.uint8)
    ids[20:70, 30:100] = 255
    ids[80:90, 10:140] = 255
    ids[rng.random(ids.shape) < 0.02] = 255  # isolated defect pixels
    Image.fromarray(ids).save(tmp_path / "m.png")
    binary = Image.fromarray(ids)
    size = (45, 37)  # (H, W)
    img = Image.new("RGB", (150, 130))
    _, m = AnomalyTransform(size, "bicubic", "pil_bicubic")(img, read_mask(str(tmp_path / "m.png")))
    pil = binary.resize((37, 45), Image.BICUBIC)
    assert m.dtype == torch.float32 and m.shape == (1, 45, 37)
    assert torch.equal(m[0], torch.from_numpy(np.array(pil)).float() / 255)
    assert torch.equal((m[0] * 255).round().to(torch.uint8), torch.from_numpy(np.array(pil)))
    soft = ((m > 0) & (m < 1)).sum().item()
    assert soft > 100  # a float mask, not binarised
    _, torch_m = AnomalyTransform(size, "bicubic", "bicubic")(img, binary)
    assert (torch_m != (m > 0.5).float()).sum() > 0  # what the torch mode does differs


def test_flip_is_joint_and_normalisation_is_image_only():
    img, mask = square_pair()
    torch.manual_seed(0)
    tfm = AnomalyTransform((40, 40), flip=True, mean=[0.5] * 3, std=[0.5] * 3)
    outs = [tfm(img, mask) for _ in range(8)]
    flipped = [o for o in outs if o[1][0, 15, 10] == 1]
    assert flipped and len(flipped) < 8  # random, both ways
    for image, m in outs:
        assert torch.equal(image[0] > 0.9, m[0] > 0)  # image in [-1, 1], mask still 0/1
        assert image.min() == -1.0


def test_transform_from_cfg_rejects_unsupported_choices():
    cfg = get_cfg_default()
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "normalize")
    with pytest.raises(ConfigError, match=r"anomaly datasets support INPUT.TRANSFORMS among normalize, random_flip .*; got \['random_resized_crop'\]"):
        AnomalyTransform.from_cfg(cfg, True)
    cfg.INPUT.TRANSFORMS = ("random_flip",)
    assert AnomalyTransform.from_cfg(cfg, True).flip and not AnomalyTransform.from_cfg(cfg, False).flip
    cfg.INPUT.MASK_INTERPOLATION = "area"
    with pytest.raises(ConfigError, match="INPUT.MASK_INTERPOLATION must be one of nearest, bilinear, bicubic, pil_bicubic; got 'area'"):
        AnomalyTransform.from_cfg(cfg, False)


def test_read_mask_binarises_ids(tmp_path):
    ids = np.array([[0, 1], [2, 7]], np.uint8)
    Image.fromarray(ids).save(tmp_path / "m.png")
    assert np.asarray(read_mask(str(tmp_path / "m.png"), values="ids")).tolist() == [[0, 255], [255, 255]]
    with pytest.raises(ImageReadError, match=r"Mask .*/m.png holds the values \{0, 1, 2, 7\} \(4 distinct\): "
                       r"expected only 0 \(normal\) and 255 \(defect\), or 0 and 1"):
        read_mask(str(tmp_path / "m.png"))  # binary masks (MVTec, folders) take 0/255 only


def _save_mask(path, arr):
    Image.fromarray(arr).save(path)
    return str(path)


def test_read_mask_conventions_and_notices(tmp_path, caplog):
    from dassl_lite.data import anomaly

    anomaly._noticed.clear()
    square = np.zeros((4, 6), np.uint8)
    square[1:3, 2:4] = 255
    expected = square.tolist()
    ok = _save_mask(tmp_path / "ok.png", square)
    with caplog.at_level("WARNING"):
        assert np.asarray(read_mask(ok, "img.png")).tolist() == expected
    assert not caplog.records  # the usual 0/255 mask: no notice
    one = _save_mask(tmp_path / "one.png", square // 255)
    one_b = _save_mask(tmp_path / "one_b.png", square // 255)
    with caplog.at_level("WARNING"):
        assert np.asarray(read_mask(one)).tolist() == expected
        assert np.asarray(read_mask(one_b)).tolist() == expected
    notices = [r.getMessage() for r in caplog.records]
    assert notices == [f"Mask {one} holds the values 0 and 1: read 1 as defect (further masks "
                       f"like it are not reported)"]  # once, naming the first file
    caplog.clear()
    grey_rgb = _save_mask(tmp_path / "grey_rgb.png", np.repeat(square[..., None], 3, axis=2))
    with caplog.at_level("WARNING"):
        assert np.asarray(read_mask(grey_rgb)).tolist() == expected
    assert [r.getMessage() for r in caplog.records] == [
        f"Mask {grey_rgb} is an RGB image with equal channels: read its first channel as the "
        f"mask (further masks like it are not reported)"]
    Image.fromarray(square).convert("1").save(tmp_path / "bits.png")  # a 1-bit mask: as is
    assert np.asarray(read_mask(str(tmp_path / "bits.png"))).tolist() == expected


@pytest.mark.parametrize("case", ["colour", "grey_levels", "jpeg", "cmyk"])
def test_read_mask_refuses_what_is_not_a_mask(tmp_path, case):
    square = np.zeros((8, 8), np.uint8)
    square[2:6, 2:6] = 255
    path = tmp_path / "m.png"
    if case == "colour":
        rgb = np.zeros((8, 8, 3), np.uint8)
        rgb[2:6, 2:6] = (255, 0, 0)
        Image.fromarray(rgb).save(path)
        match = r"Mask .*/m.png \(the mask of image x.png\) is a colour \(RGB\) image whose channels differ"
    elif case == "grey_levels":  # a mask resized bilinearly: soft edges
        Image.fromarray(square).resize((5, 5), Image.BILINEAR).save(path)
        match = r"Mask .*/m.png \(the mask of image x.png\) holds the values \{0, .*255\}.*re-save it"
    elif case == "jpeg":
        path = tmp_path / "m.jpg"
        Image.fromarray(square).save(path, quality=50)
        match = r"Mask .*/m.jpg \(the mask of image x.png\) holds the values"
    else:
        Image.fromarray(square).convert("CMYK").save(tmp_path / "m.tif")
        path = tmp_path / "m.tif"
        match = r"Mask .*/m.tif \(the mask of image x.png\) has image mode 'CMYK': expected a single-channel"
    with pytest.raises(ImageReadError, match=match):
        read_mask(str(path), "x.png")


def _tiles(tmp_path):
    """Four 6 x 4 (W x H) images of grey levels 10, 20, 30, 40; the 2nd and 4th hold a defect
    (one pixel, at (x, y) = (1, 2) and (5, 0))."""
    records = []
    for i, (defect, xy) in enumerate([("", None), ("hole", (1, 2)), ("", None), ("cut", (5, 0))]):
        Image.new("RGB", (6, 4), (10 * (i + 1),) * 3).save(tmp_path / f"{i}.png")
        mask_path = ""
        if xy:
            m = np.zeros((4, 6), np.uint8)
            m[xy[1], xy[0]] = 255
            Image.fromarray(m).save(tmp_path / f"{i}_mask.png")
            mask_path = str(tmp_path / f"{i}_mask.png")
        records.append(AnomalyDatum(tmp_path / f"{i}.png", int(bool(xy)), "cat", defect, mask_path))
    return records


def test_mosaic_layout_of_image_and_mask(tmp_path):
    """APRIL-GAN's combine_img: tile i at column i % 2, row i // 2, masks likewise."""
    records = _tiles(tmp_path)
    images = [Image.open(r.impath).convert("RGB") for r in records]
    masks = [Image.open(r.mask_path) if r.mask_path else Image.new("L", (6, 4)) for r in records]
    img, mask = mosaic_2x2(images, masks)
    assert img.size == mask.size == (12, 8)
    grey = np.asarray(img)[..., 0]
    assert (grey[:4, :6] == 10).all() and (grey[:4, 6:] == 20).all()
    assert (grey[4:, :6] == 30).all() and (grey[4:, 6:] == 40).all()
    assert np.argwhere(np.asarray(mask)).tolist() == [[2, 7], [4, 11]]  # (row, col)
    with pytest.raises(ValueError, match="takes 4 images and 4 masks; got 3 and 4"):
        mosaic_2x2(images[:3], masks)


def test_mosaic_items_are_seeded_per_epoch_and_draw_defect_type_first(tmp_path):
    records = _tiles(tmp_path)
    cfg = get_cfg_default()
    wrapper = AnomalyDatasetWrapper(cfg, records, AnomalyTransform((8, 12), "nearest", "nearest"),
                                    is_train=True)
    wrapper.enable_mosaic(1.0, seed=3)
    assert wrapper._mosaic_groups == {"cat": [[3], [0, 2], [1]]}  # cut, good, hole
    first = wrapper[0]
    assert first["defect"] == "mosaic" and first["img"].shape == (3, 8, 12)
    again = AnomalyDatasetWrapper(cfg, records, AnomalyTransform((8, 12), "nearest", "nearest"),
                                  is_train=True)
    again.enable_mosaic(1.0, seed=3)
    assert torch.equal(again[0]["img"], first["img"])
    assert torch.equal(again[0]["mask"], first["mask"])
    # the tiles' grey levels tell which records were drawn; the label is 1 if a tile is anomalous
    levels = [round(first["img"][0, r, c].item() * 255) // 10 - 1 for r, c in
              [(0, 0), (0, 6), (4, 0), (4, 6)]]
    assert first["label"] == int(any(records[i].label for i in levels))
    assert first["mask"].sum().item() == sum(records[i].label for i in levels)
    epochs = set()
    for epoch in range(6):
        wrapper.set_epoch(epoch)
        epochs.add(tuple(wrapper[0]["img"][0, ::4, ::6].flatten().tolist()))
    assert len(epochs) > 1  # every epoch draws again
    # defect type first, then a record: "good" holds two records, so each is drawn 1/6 of the
    # time, each defective record 1/3 (uniform over records would give 1/4 each)
    import random
    counts = np.bincount(sum((draw_mosaic_records([[3], [0, 2], [1]], random.Random(s))
                              for s in range(3000)), []), minlength=4) / 12000
    assert np.allclose(counts, [1 / 6, 1 / 3, 1 / 6, 1 / 3], atol=0.02)
    wrapper.enable_mosaic(0.0, seed=3)
    assert wrapper[0]["defect"] == "" and wrapper[0]["img"].shape == (3, 8, 12)
    with pytest.raises(ConfigError, match="X.RATE must be a probability in .0, 1.; got 1.5"):
        wrapper.enable_mosaic(1.5, seed=3, key="X.RATE")
    test = AnomalyDatasetWrapper(cfg, records, AnomalyTransform((8, 12)), is_train=False)
    with pytest.raises(ValueError, match="training loaders only"):
        test.enable_mosaic(0.5, seed=3)
