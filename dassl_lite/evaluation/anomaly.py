"""The ``AnomalyDetection`` evaluator: image and pixel metrics per category, macro-averaged.

What an anomaly trainer's inference returns (``model_inference(images)``) and
:meth:`AnomalyDetection.process` consumes::

    {"image_score": Tensor [B]        # higher = more anomalous
     "anomaly_map": Tensor [B, H, W]  # per-pixel score at the input resolution ([B, 1, H, W] ok)}

together with the loader batch (``"mask"`` [B, 1, H, W] 0/1, ``"label"`` [B], ``"category"``,
``"impath"``). A map of another size than the mask is resized bilinearly to it; then each map
is smoothed with a Gaussian of ``TEST.ANOMALY.MAP_SIGMA`` pixels (AF-CLIP / AnomalyCLIP use 4).
Metrics are computed per category and then averaged over categories (macro), in percent, as
the papers print them; see :mod:`dassl_lite.evaluation.anomaly_metrics` for the definitions.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tabulate import tabulate

from ..config import ConfigError
from ..registry import EVALUATOR_REGISTRY
from .anomaly_maps import save_category_maps
from .anomaly_metrics import AUPRO_MODES, AUPRO_NORMS, image_metrics, pixel_metrics
from .anomaly_threshold import F1MAX, decision_stats, f1max_threshold, parse_threshold
from .anomaly_threshold import score_lines, write_scores
from .evaluator import EvaluatorBase

logger = logging.getLogger(__name__)

__all__ = ["AnomalyDetection", "METRIC_KEYS", "smooth_maps", "undefined_messages"]

# results.json keys (macro means over categories, percent), in this order.
IMAGE_KEYS = ("image_auroc", "image_ap", "image_f1max")
PIXEL_KEYS = ("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro")
METRIC_KEYS = IMAGE_KEYS + PIXEL_KEYS


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def undefined_messages(undefined: Mapping[str, Mapping[str, str]], num_categories: int,
                       prefix: str = "") -> List[str]:
    """One line per category and reason: which metrics are undefined for which category and
    why, and over how many categories their means are taken."""
    lines = []
    for category, why in undefined.items():
        by_reason: Dict[str, List[str]] = {}
        for metric, reason in why.items():
            by_reason.setdefault(reason, []).append(metric)
        for reason, metrics in by_reason.items():
            rest = num_categories - sum(1 for c in undefined if metrics[0] in undefined[c])
            mean = (f"the mean is over the other {rest} of {num_categories} categories" if rest
                    else "no category has them, so their means are undefined too")
            lines.append(f"{prefix}category {category!r}: {', '.join(metrics)} undefined: "
                         f"{reason}; {mean}")
    return lines


def smooth_maps(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-filter each map of ``maps`` [N, H, W] (``scipy.ndimage.gaussian_filter``)."""
    if sigma <= 0:
        return maps
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(m, sigma=sigma) for m in maps]).astype(np.float32)


@EVALUATOR_REGISTRY.register()
class AnomalyDetection(EvaluatorBase):
    """Image AUROC/AP/max-F1 from image scores; pixel AUROC/AP/max-F1/AUPRO from maps.

    ``categories``: the categories expected (a processed category outside it is an error; one
    without samples is reported as missing). Config: ``TEST.ANOMALY.{MAP_SIGMA, AUPRO,
    AUPRO_NORM, FPR_LIMIT, PIXEL_BITS, SAVE_MAPS, THRESHOLD}``.
    """

    def __init__(self, cfg, categories: Optional[Sequence[str]] = None, **kwargs: Any) -> None:
        super().__init__(cfg)
        opts = cfg.TEST.ANOMALY
        if opts.AUPRO not in AUPRO_MODES:
            raise ConfigError(f"TEST.ANOMALY.AUPRO must be one of {', '.join(AUPRO_MODES)}; "
                              f"got {opts.AUPRO!r}")
        if opts.AUPRO_NORM not in AUPRO_NORMS:
            raise ConfigError(f"TEST.ANOMALY.AUPRO_NORM must be one of "
                              f"{', '.join(AUPRO_NORMS)}; got {opts.AUPRO_NORM!r}")
        if not 0 < opts.FPR_LIMIT <= 1:
            raise ConfigError(f"TEST.ANOMALY.FPR_LIMIT must be in (0, 1]; got {opts.FPR_LIMIT}")
        self.threshold = parse_threshold(opts.THRESHOLD)
        self.categories = list(categories) if categories is not None else None
        self.sigma = float(opts.MAP_SIGMA)
        self.reset()

    def reset(self) -> None:
        """Forget all processed samples."""
        self._data: Dict[str, Dict[str, List]] = OrderedDict()

    def _bucket(self, category: str) -> Dict[str, List]:
        if self.categories is not None and category not in self.categories:
            raise ValueError(f"category {category!r} is not among the evaluator's categories "
                             f"{self.categories}")
        return self._data.setdefault(category, {"scores": [], "labels": [], "maps": [],
                                                "masks": [], "impaths": [], "has_mask": []})

    def process(self, model_output: Mapping[str, torch.Tensor], gt: Mapping[str, Any]) -> None:
        """Add a batch: ``model_output`` {"image_score" [B], "anomaly_map" [B, H, W]} and the
        loader batch ``gt`` ({"mask", "label", "category", "impath"})."""
        scores, maps = _check_output(model_output)
        masks = gt["mask"]
        masks = masks[:, 0] if masks.dim() == 4 else masks
        if masks.shape[0] != maps.shape[0]:
            raise ValueError(f"batch sizes differ: {maps.shape[0]} maps, {masks.shape[0]} masks")
        if maps.shape[-2:] != masks.shape[-2:]:
            maps = F.interpolate(maps[:, None], size=masks.shape[-2:], mode="bilinear",
                                 align_corners=False)[:, 0]
        maps_np = smooth_maps(maps.detach().float().cpu().numpy(), self.sigma)
        masks_np = masks.detach().cpu().numpy() > 0.5
        labels = gt["label"].tolist() if torch.is_tensor(gt["label"]) else list(gt["label"])
        has_mask = gt.get("has_mask", [True] * len(labels))
        has_mask = has_mask.tolist() if torch.is_tensor(has_mask) else list(has_mask)
        for i, category in enumerate(gt["category"]):
            bucket = self._bucket(category)
            bucket["scores"].append(float(scores[i]))
            bucket["labels"].append(int(labels[i]))
            bucket["maps"].append(maps_np[i])
            bucket["masks"].append(masks_np[i])
            bucket["impaths"].append(gt["impath"][i])
            bucket["has_mask"].append(bool(has_mask[i]))

    def image_scores(self, category: str) -> List[float]:
        """The image scores of ``category`` processed so far, in processing order."""
        if category not in self._data:
            raise KeyError(f"no image of category {category!r} was processed; processed: "
                           f"{sorted(self._data)}")
        return list(self._data[category]["scores"])

    def processed(self, category: str) -> Dict[str, List]:
        """What was processed of ``category``: ``impaths``, ``labels``, ``scores``, ``maps``
        (resized to the masks and smoothed, as scored) and ``masks`` (bool), in processing
        order (lists; copies of the lists, the arrays are shared)."""
        if category not in self._data:
            raise KeyError(f"no image of category {category!r} was processed; processed: "
                           f"{sorted(self._data)}")
        return {k: list(v) for k, v in self._data[category].items()}

    def set_image_scores(self, category: str, scores: Sequence[float]) -> None:
        """Replace the image scores of ``category`` (same count and order), e.g. for a method
        that rescales them over all test images of a category (APRIL-GAN's few-shot score)."""
        old = self.image_scores(category)
        if len(scores) != len(old):
            raise ValueError(f"category {category!r}: {len(scores)} new image scores for "
                             f"{len(old)} processed images")
        self._data[category]["scores"] = [float(v) for v in scores]

    def undefined_metrics(self, category: str) -> Dict[str, str]:
        """The metrics of ``category`` that are undefined, each with the reason in words
        (image metrics need normal and anomalous images; pixel metrics need a mask for every
        anomalous image and both defect and normal pixels)."""
        b = self._data[category]
        labels = np.asarray(b["labels"])
        n_bad = int(labels.sum())
        n_good = len(labels) - n_bad
        why = {}
        if n_bad == 0 or n_good == 0:
            kind = "normal" if n_bad == 0 else "anomalous"
            why.update({k: f"only {kind} test images ({n_good} normal, {n_bad} anomalous)"
                        for k in IMAGE_KEYS})
        no_mask = sum(1 for label, has in zip(b["labels"], b["has_mask"]) if label and not has)
        if no_mask:
            reason = f"{no_mask} of {n_bad} anomalous images have no mask"
        elif not any(m.any() for m in b["masks"]):
            reason = ("no anomalous test images, so no defect pixels" if n_bad == 0 else
                      f"no defect pixels: every mask of its {n_bad} anomalous "
                      f"image{'s' if n_bad > 1 else ''} is empty")
        elif all(m.all() for m in b["masks"]):
            reason = "no normal pixels: every mask covers its whole image"
        else:
            reason = ""
        if reason:
            why.update({k: reason for k in PIXEL_KEYS})
        return why

    def category_results(self, category: str) -> "OrderedDict[str, Optional[float]]":
        """The seven metrics (percent) of one processed category; None for an undefined one
        (see :meth:`undefined_metrics`)."""
        b = self._data[category]
        opts = self.cfg.TEST.ANOMALY
        undefined = self.undefined_metrics(category)
        values = OrderedDict((k, None) for k in METRIC_KEYS)
        if not undefined.keys() & set(IMAGE_KEYS):
            img = image_metrics(np.asarray(b["labels"]), np.asarray(b["scores"]))
            values.update(zip(IMAGE_KEYS, (img["auroc"], img["ap"], img["f1max"])))
        if not undefined.keys() & set(PIXEL_KEYS):
            pix = pixel_metrics(np.stack(b["maps"]), np.stack(b["masks"]),
                                bits=opts.PIXEL_BITS, aupro=opts.AUPRO,
                                fpr_limit=opts.FPR_LIMIT, norm=opts.AUPRO_NORM)
            values.update(zip(PIXEL_KEYS, (pix["auroc"], pix["ap"], pix["f1max"], pix["aupro"])))
        return OrderedDict((k, None if v is None else 100.0 * v) for k, v in values.items())

    def evaluate(self) -> "OrderedDict[str, Any]":
        """Log a per-category table and the macro means; return the means (``METRIC_KEYS``,
        percent; ``image_auroc`` first; a mean is over the categories where the metric is
        defined, None where it is defined for none), ``per_category``, ``undefined``
        ({category: {metric: why}}, each also logged), ``aupro_mode`` and ``num_images``."""
        if not self._data:
            raise RuntimeError("evaluate() needs at least one processed sample; got none since "
                               "the last reset()")
        missing = [c for c in (self.categories or []) if c not in self._data]
        if missing:
            logger.warning("No test images of categories %s were processed", missing)
        per_cat = OrderedDict((c, self.category_results(c)) for c in sorted(self._data))
        undefined = {c: self.undefined_metrics(c) for c in per_cat}
        undefined = {c: why for c, why in undefined.items() if why}
        results = OrderedDict((k, _mean([r[k] for r in per_cat.values()])) for k in METRIC_KEYS)
        for message in undefined_messages(undefined, len(per_cat)):
            logger.warning(message)
        self._log(per_cat, results)
        if self.cfg.TEST.ANOMALY.SAVE_MAPS:
            self.save_maps(os.path.join(self.cfg.OUTPUT_DIR, "maps"))
        results["per_category"] = {c: dict(r) for c, r in per_cat.items()}
        results["undefined"] = undefined
        if self.threshold is not None:
            results["threshold"] = self.decide(os.path.join(self.cfg.OUTPUT_DIR, "scores.txt"))
        results["aupro_mode"] = self.aupro_mode
        results["num_images"] = sum(len(b["labels"]) for b in self._data.values())
        return results

    def decide(self, path: str) -> Dict[str, Any]:
        """Per-image decisions at ``TEST.ANOMALY.THRESHOLD`` written to ``path`` (see
        :mod:`.anomaly_threshold`); returns ``{"mode", "scores_file", "per_category": {category:
        counts, precision, recall, f1, accuracy at its threshold, or None}}``."""
        per_cat, paths, scores, thresholds = {}, [], [], []
        for category in sorted(self._data):
            b = self._data[category]
            threshold = self.threshold
            if threshold == F1MAX:
                if len(set(b["labels"])) < 2:
                    logger.warning("category %r: no F1-max threshold (its test images are all "
                                   "%s); its images are 'undecided' in %s", category,
                                   "normal" if b["labels"][0] == 0 else "anomalous", path)
                    threshold = None
                else:
                    threshold = f1max_threshold(b["labels"], b["scores"])
            per_cat[category] = (None if threshold is None else
                                 decision_stats(b["labels"], b["scores"], threshold))
            paths += b["impaths"]
            scores += b["scores"]
            thresholds += [threshold] * len(b["scores"])
        write_scores(path, score_lines(paths, scores, thresholds, decimals=6))
        logger.info("Per-image decisions (threshold %s) written to %s",
                    self.threshold if self.threshold == F1MAX else f"{self.threshold:g}", path)
        return {"mode": F1MAX if self.threshold == F1MAX else "value", "scores_file": path,
                "per_category": per_cat}

    @property
    def aupro_mode(self) -> str:
        """The AUPRO variant in words (logged and written to results.json)."""
        opts = self.cfg.TEST.ANOMALY
        if opts.AUPRO == "exact":
            return f"exact (FPR limit {opts.FPR_LIMIT})"
        return f"legacy200 (FPR < {opts.FPR_LIMIT}, {opts.AUPRO_NORM} normalised)"

    def _log(self, per_cat: Mapping[str, Mapping[str, float]], means: Mapping[str, float]):
        rows = [[c] + [_fmt(r[k]) for k in METRIC_KEYS] for c, r in per_cat.items()]
        rows.append(["mean"] + [_fmt(means[k]) for k in METRIC_KEYS])
        logger.info("=> anomaly detection results (%%; AUPRO: %s)\n%s", self.aupro_mode,
                    tabulate(rows, headers=["category", *METRIC_KEYS]))
        logger.info("=> result")
        logger.info(f"* categories: {len(per_cat)}")
        for k in METRIC_KEYS:
            logger.info(f"* {k}: {_fmt(means[k])}%")

    def save_maps(self, directory: str) -> List[str]:
        """Write an overlay PNG per processed image and a grid per category; returns paths."""
        paths = []
        for category, b in self._data.items():
            paths += save_category_maps(os.path.join(directory, category), b["impaths"],
                                        np.stack(b["maps"]), np.stack(b["masks"]),
                                        b["scores"], b["labels"])
        logger.info("Anomaly maps written to %s (%d files)", directory, len(paths))
        return paths


def _check_output(output: Mapping[str, torch.Tensor]):
    if not isinstance(output, Mapping) or "image_score" not in output or "anomaly_map" not in output:
        got = sorted(output) if isinstance(output, Mapping) else type(output).__name__
        raise ValueError(f"AnomalyDetection.process() expects model_output "
                         f"{{'image_score': [B], 'anomaly_map': [B, H, W]}}; got {got}")
    scores, maps = output["image_score"].detach().float().cpu(), output["anomaly_map"]
    maps = maps[:, 0] if maps.dim() == 4 and maps.shape[1] == 1 else maps
    if scores.dim() != 1 or maps.dim() != 3 or maps.shape[0] != scores.shape[0]:
        raise ValueError(f"expected image_score [B] and anomaly_map [B, H, W]; got "
                         f"{list(scores.shape)} and {list(output['anomaly_map'].shape)}")
    return scores, maps.detach().float()
