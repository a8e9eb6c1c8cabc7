"""Evaluators (registered in EVALUATOR_REGISTRY) and the metrics they use."""
from .anomaly import METRIC_KEYS as ANOMALY_METRIC_KEYS, AnomalyDetection
from .evaluator import Classification, EvaluatorBase, build_evaluator
from .metrics import confusion_matrix, macro_f1_score

__all__ = [
    "ANOMALY_METRIC_KEYS",
    "AnomalyDetection",
    "Classification",
    "EvaluatorBase",
    "build_evaluator",
    "confusion_matrix",
    "macro_f1_score",
]
