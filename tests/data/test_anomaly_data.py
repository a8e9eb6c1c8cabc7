"""AnomalyDatum and the joint image/mask transform."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from dassl_lite.config import ConfigError, get_cfg_default
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
    with pytest.raises(ConfigError, match="INPUT.MASK_INTERPOLATION must be one of nearest, bilinear, bicubic; got 'area'"):
        AnomalyTransform.from_cfg(cfg, False)


def test_read_mask_binarises_ids(tmp_path):
    ids = np.array([[0, 1], [2, 7]], np.uint8)
    Image.fromarray(ids).save(tmp_path / "m.png")
    assert np.asarray(read_mask(str(tmp_path / "m.png"))).tolist() == [[0, 255], [255, 255]]
