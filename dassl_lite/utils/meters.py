"""Running averages for training statistics (Dassl's AverageMeter / MetricMeter)."""
from __future__ import annotations

from collections import defaultdict, deque
from typing import Deque, Dict, Optional, Union

import torch


class AverageMeter:
    """Current value and running average; ``ema=True`` gives an exponential moving average."""

    def __init__(self, ema: bool = False) -> None:
        self.ema = ema
        self.reset()

    def reset(self) -> None:
        self.val = 0.0
        self.avg = 0.0
        self.sum = 0.0
        self.count = 0

    def update(self, val: Union[float, torch.Tensor], n: int = 1) -> None:
        if isinstance(val, torch.Tensor):
            val = val.item()
        self.val = float(val)
        self.sum += self.val * n
        self.count += n
        if self.ema:
            self.avg = self.val if self.count == n else self.avg * 0.9 + self.val * 0.1
        else:
            self.avg = self.sum / self.count


class MetricMeter:
    """A group of named AverageMeters, printed as ``loss 1.2031 (1.5047) acc 75.0000 (60.0000)``."""

    def __init__(self, delimiter: str = " ") -> None:
        self.meters: Dict[str, AverageMeter] = defaultdict(AverageMeter)
        self.delimiter = delimiter

    def update(self, input_dict: Dict[str, Union[float, torch.Tensor]]) -> None:
        if input_dict is None:
            return
        if not isinstance(input_dict, dict):
            raise TypeError(
                f"forward_backward must return a dict of floats; got {type(input_dict).__name__}"
            )
        for k, v in input_dict.items():
            self.meters[k].update(v)

    def __str__(self) -> str:
        return self.delimiter.join(
            f"{name} {m.val:.4f} ({m.avg:.4f})" for name, m in self.meters.items()
        )


class RecentRate:
    """Seconds per step over the last ``window`` steps, for ETAs that follow the current speed.

    The first step of a run (loader start-up, lazy initialisation, autotuning) is left out as
    soon as a second one is measured, so one slow start does not inflate the ETA for the rest
    of the run as a run-long average would.
    """

    def __init__(self, window: int = 20) -> None:
        self.first: Optional[float] = None
        self.recent: Deque[float] = deque(maxlen=window)

    def update(self, seconds: float) -> None:
        if self.first is None:
            self.first = float(seconds)
        else:
            self.recent.append(float(seconds))

    def seconds_per_step(self) -> float:
        """Mean of the recent steps (the first step alone until a second is measured)."""
        if self.recent:
            return sum(self.recent) / len(self.recent)
        return self.first or 0.0

    def eta(self, steps_left: int) -> float:
        """Seconds the remaining ``steps_left`` steps take at the recent rate."""
        return self.seconds_per_step() * steps_left
