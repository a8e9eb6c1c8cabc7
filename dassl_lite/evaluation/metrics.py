"""Classification metrics in numpy, with scikit-learn's definitions (no sklearn needed)."""
from __future__ import annotations

import numpy as np

__all__ = ["macro_f1_score", "confusion_matrix"]


def macro_f1_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 over the labels present in ``y_true`` (in [0, 1]).

    Same as ``sklearn.metrics.f1_score(y_true, y_pred, average="macro",
    labels=np.unique(y_true))``, which Dassl uses: per label ``c``,
    ``F1 = 2 * tp / (n_true_c + n_pred_c)``; predictions of labels absent from ``y_true``
    count only as misses of the true label.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = np.unique(y_true)
    size = int(max(y_true.max(), y_pred.max())) + 1
    tp = np.bincount(y_true[y_true == y_pred], minlength=size)[labels]
    n_true = np.bincount(y_true, minlength=size)[labels]
    n_pred = np.bincount(y_pred, minlength=size)[labels]
    return float(np.mean(2.0 * tp / (n_true + n_pred)))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Row-normalized confusion matrix (float64), like sklearn's ``normalize="true"``.

    Rows are true labels, columns predicted labels, both over the sorted union of the labels
    in ``y_true`` and ``y_pred``; a row whose label never occurs in ``y_true`` is all zeros.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = np.union1d(y_true, y_pred)
    counts = np.zeros((labels.size, labels.size), dtype=np.float64)
    np.add.at(counts, (np.searchsorted(labels, y_true), np.searchsorted(labels, y_pred)), 1.0)
    row_sums = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0)
