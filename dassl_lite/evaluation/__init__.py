"""Evaluators (registered in EVALUATOR_REGISTRY) and the metrics they use."""
from .evaluator import Classification, EvaluatorBase, build_evaluator
from .metrics import confusion_matrix, macro_f1_score

__all__ = [
    "Classification",
    "EvaluatorBase",
    "build_evaluator",
    "confusion_matrix",
    "macro_f1_score",
]
