"""AnomalyDatum and the joint image/mask transform."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from dassl_lite.config import ConfigError, get_cfg_default
from dassl_lite.data import ImageReadError
from dassl_lite.data.anomaly import AnomalyDatum, AnomalyTransform, read_mask


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
