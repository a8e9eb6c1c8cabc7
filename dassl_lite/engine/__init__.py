"""Trainer template (Dassl's TrainerBase / SimpleTrainer / TrainerX), precision, checkpoints."""
from ..registry import TRAINER_REGISTRY
from .anomaly import AnomalyTrainer, TrainingFreeAnomalyTrainer
from .base import NonFiniteLossError, TrainerBase
from .build import build_trainer
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, trainable_state_dict
from .precision import Precision, resolve_precision
from .trainer import SimpleTrainer, TrainerX, TrainingFree

__all__ = [
    "AnomalyTrainer", "CheckpointError", "NonFiniteLossError", "Precision", "SimpleTrainer", "TRAINER_REGISTRY",
    "TrainerBase", "TrainerX", "TrainingFree", "TrainingFreeAnomalyTrainer", "build_trainer", "load_checkpoint", "resolve_precision",
    "save_checkpoint", "trainable_state_dict",
]
