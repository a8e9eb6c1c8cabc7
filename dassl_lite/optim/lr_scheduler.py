"""Learning-rate schedulers by Dassl's names (``OPTIM.LR_SCHEDULER``), with Dassl's warmup.

Registered in ``LR_SCHEDULER_REGISTRY``: single_step, multi_step, cosine. Each entry is a
function ``(optimizer, optim_cfg) -> LRScheduler``. Schedulers step once per epoch, after the
epoch's optimizer steps.

Warmup (``OPTIM.WARMUP_EPOCH > 0``) follows Dassl epoch by epoch. With W warmup epochs, the lr
of epoch e is ``WARMUP_CONS_LR`` (constant) or ``WARMUP_MIN_LR`` at e = 0 then ``lr * e / W``
(linear) while e < W; from e = W on it is the wrapped scheduler's lr. With ``WARMUP_RECOUNT``
the wrapped scheduler starts at its own epoch 0 at e = W; without it, it is set to epoch W
before training. Torch's cosine is recursive (each lr is computed from the current one), so in
the second case the cosine curve is rescaled to pass through ``lr`` at e = W, exactly as Dassl.

Unlike Dassl, ``state_dict()`` holds the wrapped scheduler's state (not the object), and every
scheduler built here writes its restored lr back into the optimizer on ``load_state_dict()``,
so a restored scheduler continues with the identical lr sequence.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from torch.optim import Optimizer
from torch.optim import lr_scheduler as torch_sched

from ..registry import LR_SCHEDULER_REGISTRY

__all__ = [
    "build_lr_scheduler",
    "warmup_only_warning",
    "ConstantWarmupScheduler",
    "LinearWarmupScheduler",
    "StepLR",
    "MultiStepLR",
    "CosineAnnealingLR",
]


def _write_lrs(optimizer: Optimizer, lrs: Sequence[Any]) -> None:
    """Set each param group's lr (in place when the group's lr is a tensor)."""
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(float(lr))
        else:
            group["lr"] = lr


class _RestoresLR:
    """Mixin: ``load_state_dict`` also puts the restored lr into the optimizer.

    Torch's recursive schedulers compute the next lr from the optimizer's current one, so a
    scheduler restored into a freshly built optimizer would otherwise continue from a wrong lr.
    """

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # type: ignore[misc]
        _write_lrs(self.optimizer, self.get_last_lr())  # type: ignore[attr-defined]


class StepLR(_RestoresLR, torch_sched.StepLR):
    """torch StepLR whose ``load_state_dict`` restores the optimizer's lr."""


class MultiStepLR(_RestoresLR, torch_sched.MultiStepLR):
    """torch MultiStepLR whose ``load_state_dict`` restores the optimizer's lr."""


class CosineAnnealingLR(_RestoresLR, torch_sched.CosineAnnealingLR):
    """torch CosineAnnealingLR whose ``load_state_dict`` restores the optimizer's lr."""


class _WarmupScheduler(_RestoresLR, torch_sched.LRScheduler):
    """Runs ``warmup_epoch`` warmup epochs, then hands every step to ``successor``."""

    def __init__(
        self,
        optimizer: Optimizer,
        successor: torch_sched.LRScheduler,
        warmup_epoch: int,
        last_epoch: int = -1,
    ) -> None:
        if warmup_epoch < 1:
            raise ValueError(f"warmup_epoch must be >= 1; got {warmup_epoch!r}")
        if successor.optimizer is not optimizer:
            raise ValueError("the successor scheduler must drive the same optimizer")
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        super().__init__(optimizer, last_epoch)

    def _warmup_lrs(self) -> List[float]:
        """The lrs of warmup epoch ``self.last_epoch`` (< ``warmup_epoch``)."""
        raise NotImplementedError

    def get_lr(self) -> List[Any]:
        """Warmup lr before ``warmup_epoch``, then the successor's current lr."""
        if self.last_epoch >= self.warmup_epoch:
            return list(self.successor.get_last_lr())
        return self._warmup_lrs()

    def step(self) -> None:  # type: ignore[override]
        """Advance one epoch: a warmup step, or (after warmup) a step of the successor."""
        if self.last_epoch < self.warmup_epoch:
            super().step()
            return
        self.successor.step()
        # Dassl leaves its own counter at warmup_epoch here; we keep counting epochs.
        self.last_epoch += 1
        self._step_count += 1
        self._last_lr = list(self.successor.get_last_lr())

    def state_dict(self) -> Dict[str, Any]:
        """Plain data: this scheduler's fields plus ``successor`` = the successor's state dict."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "successor")}
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore this scheduler, its successor and the optimizer's current lr."""
        state = dict(state_dict)
        self.successor.load_state_dict(state.pop("successor"))
        super().load_state_dict(state)


class ConstantWarmupScheduler(_WarmupScheduler):
    """Dassl's constant warmup: lr = ``cons_lr`` for every group during warmup."""

    def __init__(
        self,
        optimizer: Optimizer,
        successor: torch_sched.LRScheduler,
        warmup_epoch: int,
        cons_lr: float,
        last_epoch: int = -1,
    ) -> None:
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def _warmup_lrs(self) -> List[float]:
        return [self.cons_lr for _ in self.base_lrs]


class LinearWarmupScheduler(_WarmupScheduler):
    """Dassl's linear warmup: ``min_lr`` at epoch 0, then ``base_lr * epoch / warmup_epoch``."""

    def __init__(
        self,
        optimizer: Optimizer,
        successor: torch_sched.LRScheduler,
        warmup_epoch: int,
        min_lr: float,
        last_epoch: int = -1,
    ) -> None:
        self.min_lr = min_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def _warmup_lrs(self) -> List[float]:
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]


_WARMUP_TYPES = {
    "constant": (ConstantWarmupScheduler, "WARMUP_CONS_LR"),
    "linear": (LinearWarmupScheduler, "WARMUP_MIN_LR"),
}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@LR_SCHEDULER_REGISTRY.register(name="single_step")
def _single_step(optimizer: Optimizer, optim_cfg) -> torch_sched.LRScheduler:
    """StepLR; ``STEPSIZE`` an int or a list (last entry used); -1 or 0 means ``MAX_EPOCH``."""
    given = optim_cfg.STEPSIZE
    stepsize = given[-1] if isinstance(given, (list, tuple)) and given else given
    if not _is_int(stepsize):
        raise TypeError(
            "OPTIM.STEPSIZE for single_step must be an int or a non-empty list of ints; "
            f"got {given!r}"
        )
    if stepsize <= 0:
        stepsize = optim_cfg.MAX_EPOCH
    return StepLR(optimizer, step_size=stepsize, gamma=optim_cfg.GAMMA)


@LR_SCHEDULER_REGISTRY.register(name="multi_step")
def _multi_step(optimizer: Optimizer, optim_cfg) -> torch_sched.LRScheduler:
    """MultiStepLR with milestones ``STEPSIZE`` (an int is one milestone)."""
    given = optim_cfg.STEPSIZE
    milestones = list(given) if isinstance(given, (list, tuple)) else [given]
    if not milestones or not all(_is_int(m) and m > 0 for m in milestones):
        raise ValueError(
            f"OPTIM.STEPSIZE for multi_step must be positive epoch numbers; got {given!r}"
        )
    return MultiStepLR(optimizer, milestones=milestones, gamma=optim_cfg.GAMMA)


@LR_SCHEDULER_REGISTRY.register(name="cosine")
def _cosine(optimizer: Optimizer, optim_cfg) -> torch_sched.LRScheduler:
    """CosineAnnealingLR with ``T_max = MAX_EPOCH`` (eta_min 0)."""
    if optim_cfg.MAX_EPOCH <= 0:
        raise ValueError(f"OPTIM.MAX_EPOCH must be > 0 for cosine; got {optim_cfg.MAX_EPOCH!r}")
    return CosineAnnealingLR(optimizer, T_max=float(optim_cfg.MAX_EPOCH))


def warmup_only_warning(optim_cfg) -> Optional[str]:
    """The warning for a run whose every epoch is a warm-up epoch (``WARMUP_EPOCH >=
    MAX_EPOCH``): it never trains at ``OPTIM.LR``. None for any other run."""
    warmup, epochs = optim_cfg.WARMUP_EPOCH, optim_cfg.MAX_EPOCH
    if warmup <= 0 or warmup < epochs:
        return None
    if optim_cfg.WARMUP_TYPE == "linear":
        lr = f"rising linearly from OPTIM.WARMUP_MIN_LR {optim_cfg.WARMUP_MIN_LR:g}"
    else:
        lr = f"OPTIM.WARMUP_CONS_LR {optim_cfg.WARMUP_CONS_LR:g}"
    return (f"OPTIM.MAX_EPOCH {epochs} with OPTIM.WARMUP_EPOCH {warmup}: every epoch of this run "
            f"is warm-up, so it trains only at the warm-up learning rate ({lr}), never at OPTIM.LR "
            f"{optim_cfg.LR:g}; set OPTIM.MAX_EPOCH above {warmup} or OPTIM.WARMUP_EPOCH below "
            f"{epochs}")


def build_lr_scheduler(optimizer: Optimizer, optim_cfg) -> torch_sched.LRScheduler:
    """Build ``optim_cfg.LR_SCHEDULER``, wrapped in Dassl's warmup when ``WARMUP_EPOCH > 0``.

    Raises:
        KeyError: unknown ``LR_SCHEDULER`` (names the closest registered one).
        ValueError: unknown ``WARMUP_TYPE``, bad ``STEPSIZE`` for multi_step, ``MAX_EPOCH`` <= 0.
        TypeError: ``STEPSIZE`` for single_step that is not an int or a list of ints.
    """
    make = LR_SCHEDULER_REGISTRY.get(optim_cfg.LR_SCHEDULER)
    warmup_epoch = optim_cfg.WARMUP_EPOCH
    if warmup_epoch > 0 and optim_cfg.WARMUP_TYPE not in _WARMUP_TYPES:
        raise ValueError(
            f"OPTIM.WARMUP_TYPE must be one of {', '.join(_WARMUP_TYPES)}; "
            f"got {optim_cfg.WARMUP_TYPE!r}"
        )
    scheduler = make(optimizer, optim_cfg)
    if warmup_epoch <= 0:
        return scheduler
    if not optim_cfg.WARMUP_RECOUNT:
        scheduler.last_epoch = warmup_epoch
    warmup_cls, lr_key = _WARMUP_TYPES[optim_cfg.WARMUP_TYPE]
    return warmup_cls(optimizer, scheduler, warmup_epoch, getattr(optim_cfg, lr_key))
