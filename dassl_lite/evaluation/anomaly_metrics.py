"""Anomaly detection metrics: image- and pixel-level AUROC, AP, max-F1 and AUPRO.

Curves come from scikit-learn (``roc_auc_score``, ``average_precision_score``,
``precision_recall_curve``, ``roc_curve``, ``auc``); connected regions from
``scipy.ndimage.label`` (8-connectivity, as ``skimage.measure.label``).

Pixel metrics of one category pool every pixel of every test image (normal images included).
To keep 2,162 maps of 518 x 518 pixels fast, scores are first rounded to their ``bits`` leading
bits as float32 (sign, exponent and ``bits - 9`` mantissa bits: a relative precision of
``2 ** (9 - bits)`` at any magnitude, so maps of saturated probabilities spread over many powers
of ten keep their order; ``bits=0``: exact, every distinct value its own level). Curves are then
computed by scikit-learn from the per-level counts passed as ``sample_weight``: exactly the
curves of the rounded scores, without sorting 10^8 pixels.

AUPRO (region overlap) has two variants:

- ``exact`` (MVTec AD / anomalib): the per-region overlap (PRO) against the false positive rate
  over all normal pixels, every threshold, integrated up to ``fpr_limit`` (the curve is
  interpolated at the limit) and divided by ``fpr_limit``. PRO at a threshold is the mean over
  all regions of all images of the fraction of the region above it, i.e. the true positive rate
  when each defect pixel weighs 1 / (its region's area x the number of regions).
- ``legacy200`` (APRIL-GAN / AnomalyCLIP ``cal_pro_score``, AF-CLIP ``compute_pro``): 200
  thresholds ``min + k (max - min) / 200``, k = 0..199 (the maximum itself is not one), a pixel
  is positive when its score is ``> threshold``, points with FPR < ``fpr_limit`` are kept and
  their FPRs rescaled to [0, 1]: ``norm="minmax"`` ``(fpr - min) / (max - min)`` (APRIL-GAN /
  AnomalyCLIP) or ``norm="max"`` ``fpr / max`` (AF-CLIP); then ``auc``. The curve never starts
  at (0, 0): min-max drops its steep start below the smallest kept FPR and stretches the rest,
  which inflates the score relative to ``exact``; both variants also stop at the last coarse
  threshold below the limit. Numbers are comparable with the papers, not with ``exact``.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

__all__ = ["image_metrics", "pixel_metrics", "quantize_scores", "region_weights",
           "aupro_exact", "aupro_legacy", "AUPRO_MODES", "AUPRO_NORMS"]

AUPRO_MODES = ("exact", "legacy200")
AUPRO_NORMS = ("minmax", "max")
LEGACY_THRESHOLDS = 200
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity structure


def _f1max(precision: np.ndarray, recall: np.ndarray) -> float:
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


def _binary_metrics(y: np.ndarray, s: np.ndarray, w=None) -> Dict[str, float]:
    """AUROC, AP and max-F1 (fractions) of labels ``y`` and scores ``s`` (weights ``w``).

    ``roc_auc_score`` is ``auc`` of ``roc_curve``, and ``average_precision_score`` is
    ``-sum(diff(recall) * precision[:-1])`` of ``precision_recall_curve`` (scikit-learn's own
    definitions); taking both curves once saves two sorts.
    """
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    if y.min() == y.max():
        raise ValueError(f"metrics need both normal and anomalous samples; all labels are "
                         f"{int(y[0])}")
    precision, recall, _ = precision_recall_curve(y, s, sample_weight=w)
    fpr, tpr, _ = roc_curve(y, s, sample_weight=w)
    return {"auroc": float(auc(fpr, tpr)),
            "ap": float(-np.sum(np.diff(recall) * precision[:-1])),
            "f1max": _f1max(precision, recall)}


def image_metrics(labels: np.ndarray, scores: np.ndarray) -> Dict[str, float]:
    """Image-level AUROC, AP and max-F1 (fractions) from 0/1 ``labels`` and ``scores``."""
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    return _binary_metrics(labels, scores)


def quantize_scores(maps: np.ndarray, bits: int) -> np.ndarray:
    """Monotone integer levels of ``maps``: the ``bits`` leading bits of each float32 score in
    an order-preserving unsigned encoding (``bits=0``: the rank of each distinct value)."""
    if bits == 0:
        return np.unique(maps, return_inverse=True)[1].reshape(maps.shape).astype(np.int64)
    if not 10 <= bits <= 24:
        raise ValueError(f"bits must be 0 (exact) or in 10..24; got {bits}")
    codes = np.empty(maps.shape, dtype=np.uint32)
    for i in range(maps.shape[0]):  # per map: bounded temporaries
        u = np.ascontiguousarray(maps[i], dtype=np.float32).view(np.uint32)
        key = np.where(u >> 31 == 1, ~u, u | np.uint32(0x80000000))  # order of the floats
        codes[i] = key >> np.uint32(32 - bits)
    return codes


def region_weights(masks: np.ndarray) -> np.ndarray:
    """Weight 1 / (region area x number of regions) of each defect pixel, in the order of
    ``masks[masks]`` (C order over images, rows, columns).

    Regions are the 8-connected components of each image's mask. Summing the weights of the
    defect pixels above a threshold gives the mean per-region overlap (PRO) at it.
    """
    from scipy import ndimage

    parts, n_regions = [], 0
    for i in range(masks.shape[0]):
        if not masks[i].any():
            continue
        labels, n = ndimage.label(masks[i], structure=_EIGHT)
        areas = np.bincount(labels.ravel()).astype(np.float64)
        parts.append(1.0 / areas[labels[masks[i]]])
        n_regions += n
    if n_regions == 0:
        raise ValueError("AUPRO needs at least one defect region; every mask is empty")
    return np.concatenate(parts) / n_regions


def _level_sums(codes: np.ndarray, masks: np.ndarray, weights: np.ndarray = None):
    """(levels, normal pixel counts, defect pixel counts or weights) over the levels in use;
    ``weights`` are per defect pixel (see :func:`region_weights`)."""
    size = int(codes.max()) + 1
    flat = codes.reshape(-1).astype(np.int64) << 1
    flat |= masks.reshape(-1)
    both = np.bincount(flat, minlength=2 * size).reshape(size, 2).astype(np.float64)
    neg, pos = both[:, 0], both[:, 1]
    if weights is not None:
        pos = np.bincount(codes[masks], weights=weights, minlength=size)
    used = np.flatnonzero(neg + pos)
    return used, neg[used], pos[used]


def _weighted_points(levels: np.ndarray, neg: np.ndarray, pos: np.ndarray):
    """(labels, scores, weights) with one point per non-empty (level, state)."""
    keep_n, keep_p = neg > 0, pos > 0
    y = np.concatenate([np.zeros(keep_n.sum(), int), np.ones(keep_p.sum(), int)])
    s = np.concatenate([levels[keep_n], levels[keep_p]]).astype(np.float64)
    w = np.concatenate([neg[keep_n], pos[keep_p]])
    return y, s, w


def aupro_exact(levels: np.ndarray, neg: np.ndarray, region_pos: np.ndarray,
                fpr_limit: float = 0.3) -> float:
    """Exact AUPRO from per-level normal counts and per-level region weights."""
    from sklearn.metrics import auc, roc_curve

    y, s, w = _weighted_points(levels, neg, region_pos)
    fpr, pro, _ = roc_curve(y, s, sample_weight=w)
    cut = np.searchsorted(fpr, fpr_limit, side="right")
    x, p = fpr[:cut], pro[:cut]
    if cut < fpr.size and x[-1] < fpr_limit:  # interpolate the curve at the limit
        x0, x1, p0, p1 = fpr[cut - 1], fpr[cut], pro[cut - 1], pro[cut]
        x = np.append(x, fpr_limit)
        p = np.append(p, p0 + (p1 - p0) * (fpr_limit - x0) / (x1 - x0))
    if x.size < 2:
        return 0.0
    return float(auc(x, p) / fpr_limit)


def aupro_legacy(maps: np.ndarray, masks: np.ndarray, weights: np.ndarray,
                 fpr_limit: float = 0.3, norm: str = "minmax") -> float:
    """The reference code's 200-threshold AUPRO (see the module docstring)."""
    from sklearn.metrics import auc

    if norm not in AUPRO_NORMS:
        raise ValueError(f"AUPRO norm must be one of {AUPRO_NORMS}; got {norm!r}")
    lo, hi = float(maps.min()), float(maps.max())
    if hi <= lo:
        return 0.0  # the reference code has no answer for a constant map
    # np.arange(min, max, (max - min) / 200) in the reference: the maximum is not a threshold
    thresholds = lo + (hi - lo) / LEGACY_THRESHOLDS * np.arange(LEGACY_THRESHOLDS)
    # level k = number of thresholds strictly below the score: positive at threshold j iff k > j
    neg = np.zeros(LEGACY_THRESHOLDS + 1)
    pos = np.zeros(LEGACY_THRESHOLDS + 1)
    offsets = np.r_[0, np.cumsum(masks.reshape(masks.shape[0], -1).sum(axis=1))]
    for i in range(maps.shape[0]):
        k, m = np.searchsorted(thresholds, maps[i].ravel(), side="left"), masks[i].ravel()
        neg += np.bincount(k[~m], minlength=LEGACY_THRESHOLDS + 1)
        pos += np.bincount(k[m], weights=weights[offsets[i]:offsets[i + 1]],
                           minlength=LEGACY_THRESHOLDS + 1)
    above_neg = np.cumsum(neg[::-1])[::-1][1:]  # index j: pixels with level > j
    above_pos = np.cumsum(pos[::-1])[::-1][1:]
    fpr = above_neg / max(neg.sum(), 1.0)
    pro = above_pos
    keep = fpr < fpr_limit
    fpr, pro = fpr[keep], pro[keep]
    if fpr.size < 2:
        return 0.0
    if norm == "minmax":
        fpr = (fpr - fpr.min()) / max(fpr.max() - fpr.min(), 1e-12)
    else:
        fpr = fpr / max(fpr.max(), 1e-12)
    return float(auc(fpr, pro))


def pixel_metrics(maps: np.ndarray, masks: np.ndarray, bits: int = 24,
                  aupro: str = "exact", fpr_limit: float = 0.3,
                  norm: str = "minmax") -> Dict[str, float]:
    """Pixel AUROC, AP, max-F1 and AUPRO (fractions) of ``maps`` [N, H, W] against binary
    ``masks`` [N, H, W] (all pixels of all images pooled)."""
    if aupro not in AUPRO_MODES:
        raise ValueError(f"AUPRO mode must be one of {AUPRO_MODES}; got {aupro!r}")
    maps = np.asarray(maps, dtype=np.float32)
    masks = np.asarray(masks).astype(bool, copy=False)
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"maps and masks must both be [N, H, W]; got {maps.shape} and "
                         f"{masks.shape}")
    if not np.isfinite(maps).all():
        raise ValueError("anomaly maps hold NaN or infinite values")
    weights = region_weights(masks)
    codes = quantize_scores(maps, bits)
    levels, neg, pos = _level_sums(codes, masks)
    out = _binary_metrics(*_weighted_points(levels, neg, pos))
    if aupro == "exact":
        _, _, region_pos = _level_sums(codes, masks, weights)
        out["aupro"] = aupro_exact(levels, neg, region_pos, fpr_limit)
    else:
        out["aupro"] = aupro_legacy(maps, masks, weights, fpr_limit, norm)
    return out
