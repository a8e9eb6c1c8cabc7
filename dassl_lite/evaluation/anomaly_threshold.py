"""Per-image decisions of an anomaly detector: a threshold on the image score, and ``scores.txt``.

A threshold is a number (``score >= threshold`` is anomalous) or ``f1max``: per category, the
score that maximises the image-level F1 on a labelled set (the threshold of the best point of
scikit-learn's ``precision_recall_curve``, so the decisions reproduce that point's precision and
recall). Chosen on the test set itself, F1-max decisions are an optimistic upper bound; to apply
a threshold to new images, pass the number (or the ``results.json`` that recorded it) to
``tools/anomaly_heatmap.py --threshold``.

``scores.txt``, one line per image, highest score first, fields separated by one space::

    <score> <image path> [<decision>]

``score`` with 4 decimals (6 for ``scores.txt`` of evaluation runs), then the image path, then,
when a threshold is given, ``anomalous`` or ``normal`` (``undecided`` for an image of a
category where ``f1max`` has no threshold: one without both normal and anomalous images). The
first two fields are the file's original format, so readers of ``<score> <image>`` keep
working; a path may contain spaces, so read the score as the first field and the decision as
the last (``line.split(" ", 1)``, then ``rsplit(" ", 1)``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..config import ConfigError
from ..utils.io import atomic_write_text

__all__ = ["F1MAX", "DECISIONS", "parse_threshold", "f1max_threshold", "decision_stats",
           "score_lines", "write_scores", "recorded_threshold", "threshold_setting"]

F1MAX = "f1max"
DECISIONS = ("normal", "anomalous")
UNDECIDED = "undecided"  # f1max on a category without both normal and anomalous images

Threshold = Union[float, str]


def threshold_setting(cfg) -> str:
    """``TEST.ANOMALY.THRESHOLD`` as recorded in ``results.json``: "" when unset, else its
    text (``"f1max"``, ``"0.5"``)."""
    value = cfg.TEST.ANOMALY.THRESHOLD
    return "" if value is None else str(value)


def parse_threshold(value, key: str = "TEST.ANOMALY.THRESHOLD") -> Optional[Threshold]:
    """None for None or "" (no decisions), ``"f1max"``, or the number ``value`` names; anything else
    is a :class:`ConfigError` naming ``key``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and value.strip().lower() == F1MAX:
        return F1MAX
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number (score >= it is anomalous) or {F1MAX!r} "
                          f"(the F1-max threshold on the labelled test images); got "
                          f"{value!r}") from None
    if not np.isfinite(number):
        raise ConfigError(f"{key} must be a finite number or {F1MAX!r}; got {value!r}")
    return number


def recorded_threshold(path: str, category: str) -> float:
    """The threshold an evaluation run recorded for ``category`` in its ``results.json``
    (``--threshold`` / ``TEST.ANOMALY.THRESHOLD``); errors name the file and the categories."""
    import json

    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read a threshold from {path}: {e}") from None
    recorded = results.get("threshold") if isinstance(results, dict) else None
    per_cat = (recorded or {}).get("per_category") if isinstance(recorded, dict) else None
    if not isinstance(per_cat, dict):
        raise ConfigError(f"{path} records no thresholds: evaluate with --threshold f1max "
                          f"(tools/anomaly.py) or TEST.ANOMALY.THRESHOLD f1max first")
    entry = per_cat.get(category)
    if not isinstance(entry, dict) or entry.get("threshold") is None:
        known = sorted(c for c, e in per_cat.items() if isinstance(e, dict))
        raise ConfigError(f"{path} records no threshold for category {category!r}; it has "
                          f"{', '.join(known) or 'none'} (pick one with --category)")
    return float(entry["threshold"])


def f1max_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """The score threshold of the maximal F1 (``score >= threshold`` is anomalous)."""
    from sklearn.metrics import precision_recall_curve

    labels = np.asarray(labels).astype(int)
    if labels.min() == labels.max():
        raise ValueError("an F1-max threshold needs normal and anomalous images")
    precision, recall, thresholds = precision_recall_curve(labels, np.asarray(scores, float))
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(thresholds[int(np.argmax(f1))])


def decision_stats(labels: Sequence[int], scores: Sequence[float],
                   threshold: float) -> Dict[str, Optional[float]]:
    """Counts and precision, recall, F1, accuracy (percent; None where undefined) of the
    decisions ``score >= threshold`` against 0/1 ``labels``."""
    y = np.asarray(labels).astype(bool)
    d = np.asarray(scores, float) >= threshold
    tp, fp = int((d & y).sum()), int((d & ~y).sum())
    fn, tn = int((~d & y).sum()), int((~d & ~y).sum())

    def pct(num: int, den: int) -> Optional[float]:
        return 100.0 * num / den if den else None

    return {"threshold": float(threshold), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": pct(tp, tp + fp), "recall": pct(tp, tp + fn),
            "f1": pct(2 * tp, 2 * tp + fp + fn), "accuracy": pct(tp + tn, len(y))}


def score_lines(paths: Sequence[str], scores: Sequence[float],
                thresholds: Optional[Sequence[Optional[float]]] = None,
                decimals: int = 4) -> List[str]:
    """``scores.txt`` lines, highest score first: ``<score> <path>`` and, when ``thresholds``
    is given, `` <decision>`` (``undecided`` where ``thresholds[i]`` is None)."""
    order = sorted(range(len(paths)), key=lambda i: -scores[i])
    lines = []
    for i in order:
        line = f"{scores[i]:.{decimals}f} {paths[i]}"
        if thresholds is not None:
            line += " " + (UNDECIDED if thresholds[i] is None else
                           DECISIONS[int(scores[i] >= thresholds[i])])
        lines.append(line)
    return lines


def write_scores(path: str, lines: Sequence[str]) -> str:
    """Write ``lines`` to ``path`` atomically; returns ``path``."""
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path
