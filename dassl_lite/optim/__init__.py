"""Optimizers and learning-rate schedulers with Dassl's config names and semantics."""
from .lr_scheduler import (
    ConstantWarmupScheduler,
    CosineAnnealingLR,
    LinearWarmupScheduler,
    MultiStepLR,
    StepLR,
    build_lr_scheduler,
    warmup_only_warning,
)
from .optimizer import build_optimizer

__all__ = [
    "ConstantWarmupScheduler",
    "CosineAnnealingLR",
    "LinearWarmupScheduler",
    "MultiStepLR",
    "StepLR",
    "build_lr_scheduler",
    "build_optimizer",
    "warmup_only_warning",
]
