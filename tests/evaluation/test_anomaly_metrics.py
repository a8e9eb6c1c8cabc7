"""Anomaly metrics against known values, scikit-learn on raw pixels and a naive reference."""
import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import auc, average_precision_score, roc_auc_score

from dassl_lite.evaluation.anomaly_metrics import (image_metrics, pixel_metrics, quantize_scores,
                                                   region_weights)


def two_region_masks():
    masks = np.zeros((3, 32, 32), bool)
    masks[0, 4:10, 4:12] = True
    masks[1, 20:30, 1:4] = True
    masks[1, 2:5, 25:31] = True  # second region of image 1; image 2 is normal
    return masks


def noisy_maps(masks, seed=0, signal=1.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=masks.shape) + signal * masks).astype(np.float32)


def test_perfect_inverted_and_constant_maps():
    masks = two_region_masks()
    perfect = pixel_metrics(masks.astype(np.float32), masks)
    assert perfect == {"auroc": 1.0, "ap": 1.0, "f1max": 1.0, "aupro": 1.0}
    assert pixel_metrics(-masks.astype(np.float32), masks)["auroc"] == 0.0
    assert pixel_metrics(np.zeros(masks.shape, np.float32), masks)["auroc"] == 0.5
    labels = np.array([0, 0, 1, 1])
    assert image_metrics(labels, [0.1, 0.2, 0.8, 0.9]) == {"auroc": 1.0, "ap": 1.0, "f1max": 1.0}
    assert image_metrics(labels, [0.9, 0.8, 0.2, 0.1])["auroc"] == 0.0
    assert image_metrics(labels, [0.5] * 4)["auroc"] == 0.5


@pytest.mark.parametrize("columns", [[3], [1, 3, 5]])
@pytest.mark.parametrize("bits", [0, 24])
def test_aupro_anomalib_vectors(columns, bits):
    """anomalib's test: scores arange(2800)/2800 on a 400 x 7 image, stripe labels, FPR limit
    1/3 -> 1/6; two such images (4 regions) give the mean, 1/6 again."""
    preds = (np.arange(2800) / 2800).reshape(1, 400, 7).astype(np.float32)
    masks = np.zeros((1, 400, 7), bool)
    masks[..., columns] = True
    out = pixel_metrics(preds, masks, bits=bits, fpr_limit=1 / 3)
    assert out["aupro"] == pytest.approx(1 / 6, abs=1e-3)
    both = pixel_metrics(np.concatenate([preds, preds]), np.concatenate([masks, masks]),
                         bits=bits, fpr_limit=1 / 3)
    assert both["aupro"] == pytest.approx(1 / 6, abs=1e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_pixel_curves_equal_sklearn_on_raw_pixels(seed):
    masks = two_region_masks()
    maps = noisy_maps(masks, seed)
    y, s = masks.ravel(), maps.ravel().astype(np.float64)
    exact = pixel_metrics(maps, masks, bits=0)
    assert exact["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert exact["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    rounded = pixel_metrics(maps, masks)  # 24 bits: within 1e-4 of exact
    assert all(rounded[k] == pytest.approx(exact[k], abs=1e-4) for k in exact)


def test_scores_over_many_orders_of_magnitude_keep_their_order():
    """Saturated probabilities (1e-27 .. 1e-7): rounding keeps relative precision, so the
    metrics equal scikit-learn on the raw floats."""
    masks = two_region_masks()
    maps = np.exp(np.clip(noisy_maps(masks, 5, signal=2.0), -3, 3) * 8 - 40).astype(np.float32)
    assert maps.min() < 1e-25 and maps.max() < 1e-6
    got = pixel_metrics(maps, masks)
    y, s = masks.ravel(), maps.ravel().astype(np.float64)
    assert got["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-4)
    assert got["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-4)


def naive_pro_curve(maps, masks, thresholds, strict):
    """Per threshold: mean region overlap and FPR, region by region (the reference loop)."""
    pros, fprs = [], []
    regions = [(i, ndimage.label(m, structure=np.ones((3, 3)))[0]) for i, m in enumerate(masks)]
    for th in thresholds:
        pred = maps > th if strict else maps >= th
        overlaps = [pred[i][lab == r].mean() for i, lab in regions for r in range(1, lab.max() + 1)]
        pros.append(np.mean(overlaps))
        fprs.append((pred & ~masks).sum() / (~masks).sum())
    return np.array(fprs), np.array(pros)


@pytest.mark.parametrize("norm", ["minmax", "max"])
def test_legacy200_matches_the_reference_loop(norm):
    masks = two_region_masks()
    maps = noisy_maps(masks, 3, signal=1.5)
    thresholds = np.arange(maps.min(), maps.max(), (maps.max() - maps.min()) / 200)[:200]
    fpr, pro = naive_pro_curve(maps, masks, thresholds, True)
    keep = fpr < 0.3
    fpr, pro = fpr[keep], pro[keep]
    fpr = (fpr - fpr.min()) / (fpr.max() - fpr.min()) if norm == "minmax" else fpr / fpr.max()
    got = pixel_metrics(maps, masks, aupro="legacy200", norm=norm)["aupro"]
    assert got == pytest.approx(auc(fpr, pro), abs=1e-9)


def test_exact_aupro_matches_a_dense_reference():
    masks = two_region_masks()
    maps = noisy_maps(masks, 4, signal=1.5)
    values = np.unique(maps)[::-1]
    fpr, pro = naive_pro_curve(maps, masks, values, strict=False)
    fpr, pro = np.r_[0.0, fpr], np.r_[0.0, pro]
    cut = np.searchsorted(fpr, 0.3, side="right")
    x = np.r_[fpr[:cut], 0.3]
    y = np.r_[pro[:cut], np.interp(0.3, fpr[cut - 1:cut + 1], pro[cut - 1:cut + 1])]
    exact = pixel_metrics(maps, masks, bits=0)["aupro"]
    assert exact == pytest.approx(auc(x, y) / 0.3, abs=1e-9)
    assert pixel_metrics(maps, masks, aupro="legacy200")["aupro"] != pytest.approx(exact, abs=1e-3)


def test_legacy200_differs_from_exact_in_the_expected_direction():
    """Saturated maps (defects and 5% of normal pixels at the maximum): the exact curve climbs
    from (0, 0) to (0.05, 1); legacy200 has no (0, 0) point. Min-max rescaling drops that climb
    (inflates: 1.0); dividing by the largest kept FPR keeps an empty start (deflates)."""
    masks = two_region_masks()
    rng = np.random.default_rng(0)
    maps = rng.uniform(0, 0.9, masks.shape).astype(np.float32)
    normal = np.flatnonzero(~masks)
    maps.flat[rng.choice(normal, int(0.05 * normal.size), replace=False)] = 1.0
    maps[masks] = 1.0
    exact = pixel_metrics(maps, masks)["aupro"]
    assert exact == pytest.approx((0.3 - 0.05 / 2) / 0.3, abs=2e-3)
    assert pixel_metrics(maps, masks, aupro="legacy200", norm="minmax")["aupro"] == pytest.approx(1.0)
    assert pixel_metrics(maps, masks, aupro="legacy200", norm="max")["aupro"] < exact - 0.05


def test_region_weights_average_over_regions():
    masks = two_region_masks()
    w = region_weights(masks)
    assert w.shape == (masks.sum(),) and w.sum() == pytest.approx(1.0)
    full = np.zeros(masks.shape)
    full[masks] = w
    assert full[0, 5, 5] == pytest.approx(1 / (3 * 48)) and full[1, 3, 26] == pytest.approx(1 / (3 * 18))


def test_quantize_scores_is_monotone():
    maps = np.array([[[-2.0, -1e-30, 0.0, 1e-30], [0.25, 0.2500001, 1.0, 3e38]]], np.float32)
    codes = quantize_scores(maps, 24).ravel()
    assert (np.diff(codes.astype(np.int64)) >= 0).all() and codes[0] < codes[1] < codes[3]
    assert codes[4] == codes[5]  # closer than 2**-15 relative: one level
    assert (np.diff(quantize_scores(maps, 0).ravel()) > 0).all()
    with pytest.raises(ValueError, match="bits must be 0 .exact. or in 10..24; got 32"):
        quantize_scores(maps, 32)


def test_errors_name_the_problem():
    masks = np.zeros((1, 4, 4), bool)
    with pytest.raises(ValueError, match="need both normal and anomalous samples"):
        pixel_metrics(np.zeros((1, 4, 4), np.float32), masks | True)
    with pytest.raises(ValueError, match="every mask is empty"):
        pixel_metrics(np.zeros((1, 4, 4), np.float32), masks)
    with pytest.raises(ValueError, match=r"must both be \[N, H, W\]; got \(1, 4, 4\) and \(1, 4, 5\)"):
        pixel_metrics(np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 5), bool))
    with pytest.raises(ValueError, match="NaN or infinite"):
        pixel_metrics(np.full((1, 4, 4), np.nan, np.float32), masks | np.eye(4, dtype=bool))
    with pytest.raises(ValueError, match="AUPRO mode must be one of"):
        pixel_metrics(np.zeros((1, 4, 4), np.float32), masks, aupro="fast")
