"""Evaluation and training through the feature cache on the toy world with ToyCLIP: exact
logits, invalidation, visible decisions, training views."""
import logging
import os

import pytest
import torch
from PIL import Image

from dassl_lite.config import ConfigError


def cached(toy_trainer, root, out, cache_dir, trainer="CoOp", *opts):
    return toy_trainer(trainer, root, out, "base", "DATALOADER.FEATURE_CACHE.DIR", str(cache_dir),
                       *opts)


@torch.no_grad()
def all_logits(trainer, batches=None):
    """Logits of the test split (its first ``batches`` batches), as SimpleTrainer.test does."""
    trainer.set_model_mode("eval")
    trainer.before_test()
    out = []
    try:
        for i, batch in enumerate(trainer.test_loader):
            if i == batches:
                break
            out.append(trainer.model_inference(trainer.parse_batch_test(batch)[0]))
    finally:
        trainer.after_test()
    return torch.cat(out)


@pytest.mark.parametrize("name", ["ZeroshotCLIP", "CoOp", "CoCoOp"])
def test_warm_cache_gives_bit_identical_logits(toy_trainer, toy_shapes_root, tmp_path, caplog,
                                               name):
    cache = tmp_path / "cache"
    batches = 1 if name == "CoCoOp" else None  # CoCoOp encodes B x C prompts per batch
    plain = toy_trainer(name, toy_shapes_root, tmp_path / "plain", "base",
                        "DATALOADER.FEATURE_CACHE.ENABLED", "False")
    reference = all_logits(plain, batches)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        cold = all_logits(cached(toy_trainer, toy_shapes_root, tmp_path / "cold", cache, name),
                          batches)
        warm_trainer = cached(toy_trainer, toy_shapes_root, tmp_path / "warm", cache, name)
        warm = all_logits(warm_trainer, batches)
    n = len(plain.dm.dataset.test)
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Feature cache (test")]
    assert messages[0].startswith(f"Feature cache (test, {n:,} images): 0 hit, {n:,} encoded")
    assert messages[1].startswith(f"Feature cache (test, {n:,} images): {n:,} hit, 0 encoded")
    assert torch.equal(cold, reference) and torch.equal(warm, reference)
    if batches is None:
        assert warm_trainer.test() == plain.test()


def test_changed_image_or_transform_is_encoded_again(toy_trainer, toy_shapes_root, tmp_path,
                                                     caplog):
    cache = tmp_path / "cache"
    first = cached(toy_trainer, toy_shapes_root, tmp_path / "a", cache)
    first.test()
    path = first.test_loader.items[0].impath
    img = Image.open(path).convert("RGB")
    img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path)  # new bytes, new mtime
    n = len(first.test_loader.items)
    caplog.clear()  # the first run's fill may have been captured (logger level left at INFO)
    with caplog.at_level(logging.INFO):
        cached(toy_trainer, toy_shapes_root, tmp_path / "b", cache).test()
        cached(toy_trainer, toy_shapes_root, tmp_path / "c", cache,
               "CoOp", "INPUT.INTERPOLATION", "bilinear").test()
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Feature cache (test")]
    assert messages[0].startswith(f"Feature cache (test, {n:,} images): {n - 1:,} hit, 1 encoded")
    assert messages[1].startswith(f"Feature cache (test, {n:,} images): 0 hit, {n:,} encoded")


def test_prompted_image_encoders_do_not_use_the_cache(toy_trainer, toy_shapes_root, tmp_path,
                                                      caplog):
    with caplog.at_level(logging.INFO):
        trainer = cached(toy_trainer, toy_shapes_root, tmp_path / "m", tmp_path / "cache", "MaPLe")
    assert "Feature cache: not used (MaPLe prompts or adapts its image encoder)" in caplog.text
    assert not os.path.exists(tmp_path / "cache")
    assert trainer.test_loader.__class__.__name__ == "DataLoader"
    with pytest.raises(ConfigError, match="TRAIN_VIEWS 2 trains on cached image features, but "
                                          "MaPLe prompts or adapts its image encoder"):
        cached(toy_trainer, toy_shapes_root, tmp_path / "m2", tmp_path / "cache", "MaPLe",
               "DATALOADER.FEATURE_CACHE.TRAIN_VIEWS", "2")


def test_training_on_cached_views(toy_trainer, toy_shapes_root, tmp_path, caplog):
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO):
        trainer = cached(toy_trainer, toy_shapes_root, tmp_path / "v", cache, "CoOp",
                         "DATALOADER.FEATURE_CACHE.TRAIN_VIEWS", "3", "OPTIM.MAX_EPOCH", "2")
        assert "Feature cache (train_x" not in caplog.text  # encoded when training starts
        data = trainer.train_loader_x.dataset
        assert data.features.shape[:2] == (len(trainer.dm.dataset.train_x), 3)
    n = len(trainer.dm.dataset.train_x)
    assert f"Feature cache (train_x, {n:,} images x 3 views): 0 hit, {3 * n:,} encoded" in caplog.text
    # the toy transform is a random flip: each view is the image or its mirror
    distinct = [len({tuple(data.features[i, k].tolist()) for k in range(3)}) for i in range(20)]
    assert set(distinct) == {1, 2}
    first = data.choice.clone()
    ctx0 = trainer.model.prompt_learner.ctx.detach().clone()
    trainer.train()
    assert not torch.equal(trainer.model.prompt_learner.ctx, ctx0)
    assert not torch.equal(data.choice, first)  # another view draw in epoch 2
    again = cached(toy_trainer, toy_shapes_root, tmp_path / "v2", cache, "CoOp",
                   "DATALOADER.FEATURE_CACHE.TRAIN_VIEWS", "3")
    assert torch.equal(again.train_loader_x.dataset.features, data.features)  # shared, as stored
    assert torch.equal(again.train_loader_x.dataset.choice, first)  # same seed, same draw


def test_a_shard_fills_only_its_own_images(toy_trainer, toy_shapes_root, tmp_path, caplog):
    """Under torchrun each process evaluates a DistributedSampler shard: it encodes only those
    images (padding repeats once), and its batches are those of the image loader."""
    from torch.utils.data import DataLoader, DistributedSampler

    from dassl_lite.data.feature_loaders import CachedEvalLoader

    trainer = cached(toy_trainer, toy_shapes_root, tmp_path / "o", tmp_path / "cache", "CoOp",
                     "DATALOADER.FEATURE_CACHE.ENABLED", "False")
    images = trainer.test_loader
    data = images.dataset
    n = len(data)
    shard = DistributedSampler(data, num_replicas=3, rank=2, shuffle=False)
    image_loader = DataLoader(data, batch_size=images.batch_size, sampler=shard)
    bucket_owner = cached(toy_trainer, toy_shapes_root, tmp_path / "p", tmp_path / "cache")
    bucket = bucket_owner.test_loader.bucket
    loader = CachedEvalLoader("test", image_loader, bucket, bucket_owner.test_loader.encode)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        batches = list(loader)
    per_rank = len(shard)
    unique = len(set(shard))
    assert unique == per_rank < n  # (640 = 3 x 213 + 1: padded with image 1, another rank's)
    assert (f"Feature cache (test, {unique:,} images of {n:,} (this shard)): 0 hit, "
            f"{unique:,} encoded") in caplog.text
    expected = list(image_loader)
    assert [b["index"].tolist() for b in batches] == [b["index"].tolist() for b in expected]
    assert [b["label"].tolist() for b in batches] == [b["label"].tolist() for b in expected]
    with torch.no_grad():
        direct = trainer.model.encode_image(expected[0]["img"])
    torch.testing.assert_close(batches[0]["img"], direct, rtol=0, atol=1e-6)
