"""Tip-Adapter's logits on a 3-class toy cache against a hand computation, its search grids, the
cache's class mapping, and the fitted trainers' checkpoints across base and new classes."""
import math
import os

import pytest
import torch

from dassl_lite.engine import load_checkpoint
from trainers.tip_adapter import TipCache, search_alpha_beta, search_grid, tip_logits


def toy_cache():
    """Two test features, three classes (text features), one cache key per class."""
    features = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    values = torch.eye(3)
    return features, text, keys, values


def test_tip_logits_match_a_hand_computation():
    features, text, keys, values = toy_cache()
    logits = tip_logits(features, text, keys, values, alpha=2.0, beta=1.5, scale=10.0)
    # f1 = (1, 0): clip logits 10 * (1, 0, -1); affinities (1, 0, 0.6)
    row1 = [10 + 2 * math.exp(0.0), 0 + 2 * math.exp(-1.5), -10 + 2 * math.exp(-1.5 * 0.4)]
    # f2 = (0.6, 0.8): clip logits 10 * (0.6, 0.8, -0.6); affinities (0.6, 0.8, 1)
    row2 = [6 + 2 * math.exp(-1.5 * 0.4), 8 + 2 * math.exp(-1.5 * 0.2), -6 + 2 * math.exp(0.0)]
    assert torch.allclose(logits, torch.tensor([row1, row2]), atol=1e-6)


def test_alpha_zero_is_zero_shot_clip():
    features, text, keys, values = toy_cache()
    logits = tip_logits(features, text, keys, values, alpha=0.0, beta=5.0, scale=100.0)
    assert torch.allclose(logits, 100.0 * features @ text.t())


def test_search_grids_are_upstreams():
    assert search_grid(7, 200)[:3] == pytest.approx([0.1, 0.1345, 0.169])
    assert len(search_grid(7, 200)) == 200 and search_grid(7, 200)[-1] == pytest.approx(6.9655)
    assert search_grid(3, 20) == pytest.approx([0.1 + 0.145 * i for i in range(20)])


def test_search_finds_the_cache_weight_that_fixes_zero_shot_mistakes():
    # zero-shot text features are swapped for classes 0/1; the cache is right
    features, text, keys, values = toy_cache()
    text = text[[1, 0, 2]]
    labels = torch.tensor([0, 2])  # feature 2 lies on class 2's key
    alpha, beta, acc = search_alpha_beta(features, labels, text, keys, values, scale=1.0,
                                         search_scale=[7, 3], search_step=[200, 20])
    assert acc == 100.0
    # first best of the beta-outer, alpha-inner grid, checked against a brute-force scan
    for b in search_grid(7, 200):
        for a in search_grid(3, 20):
            pred = tip_logits(features, text, keys, values, a, b, 1.0).argmax(1)
            if torch.equal(pred, labels):
                assert (alpha, beta) == (a, b)
                return
    pytest.fail("no grid point classifies both features")


def test_cache_values_follow_class_names():
    cache = TipCache(width=2, size=0, learnable=False, alpha=1.0, beta=1.0)
    cache.fill(torch.eye(2)[[0, 1, 1]], torch.tensor([0, 1, 1]), ["cat", "dog"])
    assert torch.equal(cache.values(["dog", "owl", "cat"]),
                       torch.tensor([[0.0, 0, 1], [1, 0, 0], [1, 0, 0]]))
    assert torch.equal(cache.values(["owl"]), torch.zeros(3, 1))


@pytest.mark.parametrize("name", ["TipAdapter", "LinearProbeCLIP"])
def test_fitted_trainer_base_to_new(build, build_seeded, trainer_cfg, tmp_path, name):
    """Base: the fit is saved as the final epoch's checkpoint. New: the head loads (its size is
    the checkpoint's) and, seeing no known class, the model is exactly zero-shot CLIP."""
    base = build(name, "DATASET.SUBSAMPLE_CLASSES", "base", output_dir=tmp_path / "base")
    base.train()
    ckpt = load_checkpoint(os.path.join(base.output_dir, base.model_name, "model.pth.tar-1"))
    assert ckpt["epoch"] == 1 and base.model_epoch == 1
    new = build(name, "DATASET.SUBSAMPLE_CLASSES", "new", output_dir=tmp_path / "new")
    new.load_model(str(tmp_path / "base"), epoch=1)
    fitted = new.model.fitted.state_dict()
    assert all(torch.equal(fitted[k], v) for k, v in ckpt["state_dict"].items())
    zs = build_seeded(trainer_cfg("ZeroshotCLIP", "DATASET.SUBSAMPLE_CLASSES", "new",
                                  output_dir=tmp_path / "zs"))
    images = next(iter(new.test_loader))["img"]
    with torch.no_grad():
        assert torch.allclose(new.model(images), zs.model(images), atol=1e-5)


def test_linear_probe_refuses_a_mix_of_seen_and_unseen_classes(build, tmp_path):
    base = build("LinearProbeCLIP", "DATASET.SUBSAMPLE_CLASSES", "base",
                 output_dir=tmp_path / "base")
    base.train()
    full = build("LinearProbeCLIP", output_dir=tmp_path / "all")
    full.load_model(str(tmp_path / "base"))
    with pytest.raises(Exception, match="not among them"):
        full.test()
