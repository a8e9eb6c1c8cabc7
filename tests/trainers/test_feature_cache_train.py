"""Training on cached features when the training transform's only randomness is flips
(``DATALOADER.FEATURE_CACHE.TRAIN_EXACT``): every flip outcome encoded once, the same flips drawn
from the same random stream as with images."""
import logging

import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from dassl_lite.data.feature_loaders import flip_probabilities, outcome_transform
from dassl_lite.data.transforms import build_transform


def test_flip_probabilities_name_what_can_be_enumerated(toy_trainer, toy_shapes_root, tmp_path):
    trainer = toy_trainer("CoOp", toy_shapes_root, tmp_path / "o", "base",
                          "DATALOADER.FEATURE_CACHE.ENABLED", "False")
    assert flip_probabilities(trainer.dm.tfm_train) == [0.5]  # toy.yaml: random_flip, normalize
    assert flip_probabilities(trainer.dm.tfm_test) == []
    cfg = trainer.cfg.clone()
    cfg.defrost()
    cfg.INPUT.TRANSFORMS = ["random_resized_crop", "random_flip", "normalize"]
    assert flip_probabilities(build_transform(cfg, is_train=True)) is None
    assert flip_probabilities(T.Compose([T.RandomVerticalFlip(0.3), T.ToTensor(),
                                         T.RandomHorizontalFlip(0.2)])) == [0.3, 0.2]
    assert flip_probabilities(T.Compose([T.ToTensor(), T.ColorJitter(0.4)])) is None


def test_outcome_transforms_fix_each_flip():
    img = Image.new("RGB", (4, 3))
    img.putpixel((0, 0), (255, 0, 0))
    tfm = T.Compose([T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.ToTensor()])
    plain = T.ToTensor()(img)
    state = torch.get_rng_state()
    assert torch.equal(outcome_transform(tfm, 0)(img), plain)
    assert torch.equal(outcome_transform(tfm, 1)(img), plain.flip(-1))
    assert torch.equal(outcome_transform(tfm, 2)(img), plain.flip(-2))
    assert torch.equal(outcome_transform(tfm, 3)(img), plain.flip(-1).flip(-2))
    assert torch.equal(torch.get_rng_state(), state)  # fixed outcomes draw nothing


def _train(toy_trainer, root, out, *opts):
    trainer = toy_trainer("CoOp", root, out, "base", "OPTIM.MAX_EPOCH", "2",
                          "TEST.NO_TEST", "True", *opts)
    trainer.train()
    return trainer


def test_exact_training_takes_the_same_flips_as_images(toy_trainer, toy_shapes_root, tmp_path,
                                                       caplog):
    cache = ["DATALOADER.FEATURE_CACHE.DIR", str(tmp_path / "cache")]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        fresh = _train(toy_trainer, toy_shapes_root, tmp_path / "fresh", *cache,
                       "DATALOADER.FEATURE_CACHE.TRAIN_EXACT", "False")
        fresh_rng = torch.get_rng_state()
        exact = _train(toy_trainer, toy_shapes_root, tmp_path / "exact", *cache)
        exact_rng = torch.get_rng_state()
        again = _train(toy_trainer, toy_shapes_root, tmp_path / "again", *cache)
    n = len(fresh.dm.dataset.train_x)
    text = caplog.text
    assert "Feature cache: training on fresh images (DATALOADER.FEATURE_CACHE.TRAIN_EXACT is False)" in text
    assert "training on cached features of all 2 flip outcomes, flips drawn as with images (exact)" in text
    assert f"(train_x, {n:,} images x 2 flip outcomes, exact): 0 hit, {2 * n:,} encoded" in text
    assert f"(train_x, {n:,} images x 2 flip outcomes, exact): {2 * n:,} hit, 0 encoded" in text
    assert fresh.train_loader_x.dataset.__class__.__name__ == "DatasetWrapper"
    # the same random stream: the sampler's orders and every flip drawn as the images drew them
    assert torch.equal(fresh_rng, exact_rng)
    ctx = fresh.model.prompt_learner.ctx
    assert not torch.equal(ctx, ctx.new_zeros(ctx.shape))
    # the same context up to the rounding of features encoded in other batches
    torch.testing.assert_close(exact.model.prompt_learner.ctx, ctx, rtol=0, atol=1e-5)
    assert torch.equal(again.model.prompt_learner.ctx, exact.model.prompt_learner.ctx)


def test_features_of_each_outcome_are_those_of_the_flipped_image(toy_trainer, toy_shapes_root,
                                                                 tmp_path):
    trainer = toy_trainer("CoOp", toy_shapes_root, tmp_path / "o", "base",
                          "DATALOADER.FEATURE_CACHE.DIR", str(tmp_path / "cache"))
    features = trainer.train_loader_x.dataset.features  # [N, 2, E], filled on first access
    items = trainer.dm.dataset.train_x[:4]
    from dassl_lite.data.data_manager import read_image

    images = [read_image(d.impath) for d in items]
    tfm = trainer.dm.tfm_train
    with torch.no_grad():
        for outcome in (0, 1):
            batch = torch.stack([outcome_transform(tfm, outcome)(img) for img in images])
            direct = trainer.model.encode_image(batch)
            torch.testing.assert_close(features[:4, outcome], direct, rtol=0, atol=1e-6)
    assert not torch.allclose(features[:4, 0], features[:4, 1])


@pytest.mark.parametrize("transforms, expected", [
    (["random_resized_crop", "random_flip", "normalize"], "fresh images (the transform draws more "
                                                          "than flips; DATALOADER.FEATURE_CACHE."
                                                          "TRAIN_VIEWS K trains on K cached views)"),
])
def test_other_augmentations_train_on_images(toy_trainer, toy_shapes_root, tmp_path, caplog,
                                             transforms, expected):
    caplog.clear()
    with caplog.at_level(logging.INFO):
        trainer = toy_trainer("CoOp", toy_shapes_root, tmp_path / "o", "base",
                              "DATALOADER.FEATURE_CACHE.DIR", str(tmp_path / "cache"),
                              "INPUT.TRANSFORMS", str(transforms))
    assert f"Feature cache: training on {expected}" in caplog.text
    assert trainer.train_loader_x.dataset.__class__.__name__ == "DatasetWrapper"


def test_views_are_the_same_for_a_copy_of_the_dataset(toy_trainer, toy_shapes_root, tmp_path):
    """A view's seed comes from the image's path under DATASET.ROOT, not from where the copy
    lies or its file times: two copies (other paths, other mtimes) give the same views."""
    import shutil

    from dassl_lite.data.feature_loaders import portable_name

    copy = tmp_path / "copy"
    shutil.copytree(toy_shapes_root, copy, copy_function=shutil.copy)  # new mtimes
    features = []
    for root, name in ((toy_shapes_root, "a"), (str(copy), "b")):
        trainer = toy_trainer("CoOp", root, tmp_path / name, "base",
                              "DATALOADER.FEATURE_CACHE.DIR", str(tmp_path / f"cache_{name}"),
                              "DATALOADER.FEATURE_CACHE.TRAIN_VIEWS", "2")
        features.append(trainer.train_loader_x.dataset.features[:64])
    assert torch.equal(features[0], features[1])
    assert portable_name(str(copy / "x" / "y.png"), str(copy)) == "x/y.png"
    assert portable_name("/elsewhere/y.png", str(copy)) == "/elsewhere/y.png"
