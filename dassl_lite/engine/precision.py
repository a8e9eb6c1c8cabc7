"""Precision policy: which dtype the frozen model runs in, autocast, and gradient scaling.

``fp32``  everything in float32.
``fp16``  frozen weights in float16 (GPU only; on CPU falls back to fp32 with a warning).
``amp``   float32 weights, autocast (float16 on GPU with a GradScaler; bfloat16 on CPU).
``bf16``  frozen weights in bfloat16 (CPU and GPU).
Trainable parameters always stay in float32, so optimizers never step half-precision weights.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import ContextManager, Optional

import torch

from ..config.validate import PRECISIONS
from ..errors import DasslLiteError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    """A resolved precision setting for one device."""

    requested: str  # what the config asked for
    name: str  # what is used on this device
    device: torch.device
    model_dtype: torch.dtype  # dtype of the frozen model weights
    autocast_dtype: Optional[torch.dtype]  # None: no autocast

    def autocast(self) -> ContextManager:
        """Context for forward passes (a no-op unless ``amp``)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def make_grad_scaler(self) -> Optional["torch.amp.GradScaler"]:
        """A GradScaler for float16 autocast on GPU; None otherwise."""
        if self.name == "amp" and self.autocast_dtype == torch.float16:
            return torch.amp.GradScaler(self.device.type)
        return None


def resolve_precision(prec: str, device: torch.device, key: str = "PREC") -> Precision:
    """Turn a ``PREC`` config value into a :class:`Precision` for ``device``."""
    if prec not in PRECISIONS:
        raise DasslLiteError(f"{key} must be one of {', '.join(PRECISIONS)}; got {prec!r}")
    on_gpu = device.type == "cuda"
    if prec == "fp16" and not on_gpu:
        logger.warning(
            f"{key}=fp16 needs a GPU; running in fp32 on {device.type} "
            f"(use bf16 for reduced precision on CPU)"
        )
        prec_used = "fp32"
    else:
        prec_used = prec
    model_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(prec_used, torch.float32)
    autocast_dtype = None
    if prec_used == "amp":
        autocast_dtype = torch.float16 if on_gpu else torch.bfloat16
    return Precision(prec, prec_used, device, model_dtype, autocast_dtype)
