"""Aggregation over seeds and datasets: mean, std, 95% interval, harmonic mean.

Conventions (the ones the CoOp/CoCoOp/MaPLe papers' numbers were made with):

* ``std`` is the *population* standard deviation (``ddof=0``): upstream ``parse_test_res.py``
  calls ``np.std(values)``, whose default is ``ddof=0``. With 3 seeds it is ``sqrt(2/3) ~ 0.82``
  times the sample std (``ddof=1``).
* ``ci95`` is upstream's ``1.96 * std / sqrt(n)`` with that same population std.
* HM of a dataset is the harmonic mean of the *mean* base and *mean* new accuracy; the average
  over datasets is ``HM(mean base, mean new)`` of the dataset means (MaPLe's Table 1:
  76.66 / 70.54 -> 73.47). The std given for HM is that of the per-seed HMs.
* A statistic over values of which one is missing is ``None`` (never an average of fewer seeds);
  ``missing`` names what is absent.
"""
from __future__ import annotations

import math
import statistics
from typing import Dict, Mapping, Optional, Sequence

STD_CONVENTION = "population std (ddof=0), as upstream parse_test_res.py (np.std)"


def harmonic_mean(base: Optional[float], new: Optional[float]) -> Optional[float]:
    """``2 * base * new / (base + new)``; 0 when both are 0; None when either is None."""
    if base is None or new is None:
        return None
    if base < 0 or new < 0:
        raise ValueError(f"accuracies must be >= 0; got base={base!r}, new={new!r}")
    return 0.0 if base + new == 0 else 2.0 * base * new / (base + new)


def mean_std(values: Sequence[float]) -> tuple:
    """``(mean, population std)`` of a non-empty sequence."""
    if not values:
        raise ValueError("mean_std needs at least one value; got none")
    return statistics.fmean(values), statistics.pstdev(values)


def ci95(values: Sequence[float]) -> float:
    """Upstream's 95% confidence half-width: ``1.96 * pstdev / sqrt(n)``."""
    return 1.96 * mean_std(values)[1] / math.sqrt(len(values))


def seed_stat(per_seed: Mapping[int, Optional[float]]) -> Dict:
    """``{"mean", "std", "per_seed", "missing"}`` of one value per seed (None = missing)."""
    missing = [s for s, v in per_seed.items() if v is None]
    present = [v for v in per_seed.values() if v is not None]
    mean, std = mean_std(present) if present and not missing else (None, None)
    return {"mean": mean, "std": std, "per_seed": {str(s): v for s, v in per_seed.items()},
            "missing": missing}


def base2new_stat(base: Mapping[int, Optional[float]],
                  new: Mapping[int, Optional[float]]) -> Dict[str, Dict]:
    """Base, new and HM statistics of one dataset from per-seed base and new accuracies."""
    if list(base) != list(new):
        raise ValueError(f"base and new need the same seeds; got {list(base)} and {list(new)}")
    b, n = seed_stat(base), seed_stat(new)
    hm = seed_stat({s: harmonic_mean(base[s], new[s]) for s in base})
    hm["mean"] = harmonic_mean(b["mean"], n["mean"])
    return {"base": b, "new": n, "hm": hm}


def mean_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
    """Mean of ``values``; None when it is empty or any value is None."""
    if not values or any(v is None for v in values):
        return None
    return statistics.fmean(values)


def average_base2new(per_dataset: Mapping[str, Dict[str, Dict]]) -> Dict[str, Optional[float]]:
    """Average over datasets: mean base, mean new, and the HM of those two means."""
    base = mean_or_none([d["base"]["mean"] for d in per_dataset.values()])
    new = mean_or_none([d["new"]["mean"] for d in per_dataset.values()])
    return {"base": base, "new": new, "hm": harmonic_mean(base, new)}

