import logging

import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms import InterpolationMode

from dassl_lite.config import get_cfg_default
from dassl_lite.data import build_transform
from dassl_lite.data.transforms import Cutout, GaussianNoise, InstanceNormalization, Random2DTranslation

ALL = ["normalize", "instance_norm", "gaussian_noise", "cutout", "gaussian_blur", "randomgrayscale",
       "colorjitter", "center_crop", "random_flip", "random_resized_crop", "random_crop", "random_translation"]


def cfg_with(transforms, size=(16, 16), interpolation="bicubic"):
    cfg = get_cfg_default()
    cfg.INPUT.TRANSFORMS = tuple(transforms)
    cfg.INPUT.SIZE = size
    cfg.INPUT.INTERPOLATION = interpolation
    return cfg


def kinds(compose):
    return [type(t) for t in compose.transforms]


def test_coop_train_pipeline():
    cfg = cfg_with(["random_resized_crop", "random_flip", "normalize"])
    cfg.INPUT.RRCROP_SCALE = (0.5, 1.0)
    tfm = build_transform(cfg, is_train=True)
    assert kinds(tfm) == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    rrc, norm = tfm.transforms[0], tfm.transforms[3]
    assert rrc.size == (16, 16) and rrc.scale == (0.5, 1.0) and rrc.interpolation == InterpolationMode.BICUBIC
    assert norm.mean == [0.485, 0.456, 0.406] and norm.std == [0.229, 0.224, 0.225]
    out = tfm(Image.new("RGB", (8, 12), (10, 20, 30)))
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32


def test_train_pipeline_resizes_without_crop_and_keeps_dassl_order():
    tfm = build_transform(cfg_with(["normalize", "random_flip"], size=(16, 20)), is_train=True)
    assert kinds(tfm) == [T.Resize, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert tfm.transforms[0].size == (16, 20) and tfm.transforms[0].interpolation == InterpolationMode.BICUBIC
    assert tfm(Image.new("RGB", (7, 9))).shape == (3, 16, 20)


def test_every_choice_in_dassl_order():
    cfg = cfg_with(ALL)
    tfm = build_transform(cfg, is_train=True)
    assert kinds(tfm) == [Random2DTranslation, T.RandomCrop, T.RandomResizedCrop, T.RandomHorizontalFlip,
                          T.CenterCrop, T.ColorJitter, T.RandomGrayscale, T.RandomApply, T.ToTensor, Cutout,
                          T.Normalize, GaussianNoise, InstanceNormalization]
    crop = tfm.transforms[1]
    assert crop.padding == 4 and crop.size == (16, 16)
    assert tfm.transforms[7].p == 0.5 and tfm.transforms[7].transforms[0].kernel_size == (21, 21)
    torch.manual_seed(0)
    assert tfm(Image.new("RGB", (20, 20), (200, 10, 10))).shape == (3, 16, 16)


def test_test_pipeline():
    cfg = cfg_with(["random_resized_crop", "random_flip", "normalize"], size=(16, 12))
    tfm = build_transform(cfg, is_train=False)
    assert kinds(tfm) == [T.Resize, T.CenterCrop, T.ToTensor, T.Normalize]
    assert tfm.transforms[0].size == 16 and tfm.transforms[0].interpolation == InterpolationMode.BICUBIC
    assert tfm.transforms[1].size == (16, 12)
    assert tfm(Image.new("RGB", (30, 10))).shape == (3, 16, 12)
    assert kinds(build_transform(cfg_with(["instance_norm", "colorjitter"]), is_train=False)) == [
        T.Resize, T.CenterCrop, T.ToTensor, InstanceNormalization]


def test_squash_test_pipeline_keeps_the_whole_image():
    """INPUT.TEST_RESIZE squash (VTAB-1k, as KMnP/vpt): the test image goes straight to SIZE, so
    a wide image keeps its left and right edges (a centre crop cuts them off)."""
    cfg = cfg_with(["normalize"], size=(16, 16), interpolation="nearest")
    cfg.INPUT.TEST_RESIZE = "squash"
    tfm = build_transform(cfg, is_train=False)
    assert kinds(tfm) == [T.Resize, T.ToTensor, T.Normalize]
    assert tfm.transforms[0].size == (16, 16)
    wide = Image.new("RGB", (64, 16), (0, 0, 0))
    wide.paste((255, 255, 255), (0, 0, 8, 16))  # a white strip at the left edge
    squashed = tfm(wide)
    cropped = build_transform(cfg_with(["normalize"], size=(16, 16), interpolation="nearest"),
                              is_train=False)(wide)
    assert squashed.shape == cropped.shape == (3, 16, 16)
    white = (1 - 0.485) / 0.229  # the red channel of a white pixel after normalize
    assert squashed[0, :, 0].allclose(torch.full((16,), white), atol=1e-4)
    assert cropped[0].max() < 0  # the crop kept the black middle only
    cfg.INPUT.TEST_RESIZE = "centre"
    with pytest.raises(ValueError) as e:
        build_transform(cfg, is_train=False)
    assert str(e.value) == "INPUT.TEST_RESIZE must be one of crop, squash; got 'centre'"


def test_unknown_transform_and_interpolation():
    with pytest.raises(KeyError) as e:
        build_transform(cfg_with(["random_flp"]), is_train=True)
    assert "Did you mean 'random_flip'?" in str(e.value) and "TRANSFORM registry" in str(e.value)
    with pytest.raises(ValueError) as e:
        build_transform(cfg_with([], interpolation="lanczos"), is_train=False)
    assert str(e.value) == "INPUT.INTERPOLATION must be one of bilinear, bicubic, nearest; got 'lanczos'"


def test_no_transform_and_choices_override():
    cfg = cfg_with(["random_flip"])
    assert kinds(build_transform(cfg, is_train=True, choices=["random_crop"])) == [T.RandomCrop, T.ToTensor]
    cfg.INPUT.NO_TRANSFORM = True
    assert build_transform(cfg, is_train=True) is None


def test_pipeline_logged_once_per_build(caplog):
    caplog.set_level(logging.INFO, logger="dassl_lite.data.transforms")
    build_transform(cfg_with(["random_flip", "normalize"]), is_train=True)
    records = [r.getMessage() for r in caplog.records]
    assert len(records) == 1
    assert records[0].startswith("Transform (train):\n  + Resize(size=(16, 16), interpolation=bicubic")
    assert "  + RandomHorizontalFlip(p=0.5)\n  + ToTensor()\n  + Normalize(" in records[0]


def test_tensor_transforms_numbers():
    img = torch.arange(3 * 8 * 8, dtype=torch.float32).reshape(3, 8, 8)
    normed = InstanceNormalization()(img)
    assert torch.allclose(normed.mean((1, 2)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(normed.reshape(3, -1).std(1), torch.ones(3), atol=1e-5)
    torch.manual_seed(0)
    cut = Cutout(n_holes=1, length=4)(torch.ones(3, 8, 8))
    zeros = int((cut[0] == 0).sum())
    assert 0 < zeros <= 16 and torch.equal(cut[0], cut[1])
    noisy = GaussianNoise(std=0.1, p=1.0)(torch.zeros(3, 32, 32))
    assert 0.08 < noisy.std().item() < 0.12
    assert torch.equal(GaussianNoise(p=0.0)(img), img)
    torch.manual_seed(1)
    a = Random2DTranslation(8, 8, p=1.0)(Image.new("RGB", (5, 5)))
    assert a.size == (8, 8)


def test_input_size_from_yaml_list_and_bad_size():
    tfm = build_transform(cfg_with(["random_resized_crop"], size=[12, 10]), is_train=True)
    assert tfm.transforms[0].size == (12, 10)
    with pytest.raises(ValueError) as e:
        build_transform(cfg_with([], size=(224,)), is_train=False)
    assert str(e.value) == "INPUT.SIZE must be (height, width) of positive ints; got (224,)"
