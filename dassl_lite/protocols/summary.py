"""Per-trainer summaries (JSON-ready dicts) of a protocol's outcomes.

Values come from each run's ``results.json`` (the engine's machine-readable twin of the
``* accuracy:`` log lines). Only runs that finished in or before this invocation count; a failed
or missing run is a ``None`` value, listed under ``missing`` and in ``failed_jobs``.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

from .jobs import read_results
from .plans import RunSpec
from .resolve import DatasetConfig
from .runner import Outcome
from .stats import STD_CONVENTION, average_base2new, base2new_stat, mean_or_none, seed_stat

METRICS = ("accuracy", "error", "macro_f1")
Key = Tuple[str, str, int, int]  # kind, dataset, shots, seed


def collect(outcomes: Sequence[Outcome], results: Sequence[Optional[Dict]],
            metric: str) -> Dict[Key, Optional[float]]:
    """``metric`` of each job's results (``results[i]`` belongs to ``outcomes[i]``), keyed by
    (kind, dataset, shots, seed); None if absent."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    return {(o.job.kind, o.job.dataset, o.job.shots, o.job.seed): (r or {}).get(metric)
            for o, r in zip(outcomes, results)}


def wall_times(outcomes: Sequence[Outcome], results: Sequence[Optional[Dict]]) -> Dict:
    """Run times the jobs recorded in their ``results.json`` (``wall_time_s``: building, training
    and evaluating, without the interpreter start): the total and the mean per job kind."""
    per_kind: Dict[str, List[float]] = {}
    for o, r in zip(outcomes, results):
        seconds = (r or {}).get("wall_time_s")
        if seconds is not None:
            per_kind.setdefault(o.job.kind, []).append(float(seconds))
    return {"total_s": round(sum(sum(v) for v in per_kind.values()), 2),
            "mean_s": {k: round(sum(v) / len(v), 2) for k, v in per_kind.items()}}


def _start(protocol: str, spec: RunSpec, seeds: Sequence[int], metric: str,
           outcomes: Sequence[Outcome]) -> Tuple[Dict, Dict[Key, Optional[float]]]:
    """The summary's header and the ``metric`` values of the jobs (each ``results.json`` is read
    once)."""
    results = [read_results(o.job.output_dir) if o.ok else None for o in outcomes]
    failed = [{"job": o.job.name, "output_dir": o.job.output_dir, "state": o.state,
               "returncode": o.returncode, "detail": o.detail, "log_tail": o.log_tail}
              for o in outcomes if not o.ok]
    header = {"protocol": protocol, "trainer": spec.trainer, "config": spec.cfg_label,
              "config_file": spec.config_file, "seeds": list(seeds), "metric": metric,
              "std_convention": STD_CONVENTION, "failed_jobs": failed,
              "wall_time": wall_times(outcomes, results)}
    return header, collect(outcomes, results, metric)


def summarize_base2new(spec: RunSpec, datasets: Sequence[DatasetConfig], seeds: Sequence[int],
                       shots: int, outcomes: Sequence[Outcome], metric: str = "accuracy") -> Dict:
    """Base (the training runs' final tests), new and HM per dataset, and their average."""
    summary, v = _start("base2new", spec, seeds, metric, outcomes)
    per = {d.label: base2new_stat({s: v.get(("train_base", d.label, shots, s)) for s in seeds},
                                  {s: v.get(("test_new", d.label, shots, s)) for s in seeds})
           for d in datasets}
    summary.update(shots=shots, datasets=per, average=average_base2new(per))
    return summary


def summarize_fewshot(spec: RunSpec, datasets: Sequence[DatasetConfig], seeds: Sequence[int],
                      shots_list: Sequence[int], outcomes: Sequence[Outcome],
                      metric: str = "accuracy") -> Dict:
    """Mean +- std over seeds per dataset and shot count, and the average over datasets."""
    summary, v = _start("fewshot", spec, seeds, metric, outcomes)
    per = {d.label: {str(k): seed_stat({s: v.get(("train", d.label, k, s)) for s in seeds})
                     for k in shots_list} for d in datasets}
    average = {str(k): mean_or_none([per[d.label][str(k)]["mean"] for d in datasets])
               for k in shots_list}
    summary.update(shots=list(shots_list), datasets=per, average=average)
    return summary


def summarize_crossdataset(spec: RunSpec, source: DatasetConfig, targets: Sequence[DatasetConfig],
                           seeds: Sequence[int], shots: int, outcomes: Sequence[Outcome],
                           metric: str = "accuracy") -> Dict:
    """The source's own test result, each target's, and the average over the targets."""
    summary, v = _start("crossdataset", spec, seeds, metric, outcomes)
    src = seed_stat({s: v.get(("train", source.label, shots, s)) for s in seeds})
    per = {t.label: seed_stat({s: v.get(("test", t.label, shots, s)) for s in seeds})
           for t in targets}
    summary.update(shots=shots, source={"dataset": source.label, **src}, targets=per,
                   average=mean_or_none([st["mean"] for st in per.values()]))
    return summary


def error_line(log_tail: str) -> str:
    """The job's own error from the tail of its log: the last ``error:`` line (what
    ``tools/train.py`` prints), else the last line of a traceback (``SomeError: ...``), else
    the last non-empty line; "" for an empty tail. At most 1000 characters."""
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    pick = next((line for line in reversed(lines) if line.startswith("error:")), None)
    if pick is None:
        pick = next((line for line in reversed(lines) if _TRACEBACK_END.match(line)),
                    lines[-1] if lines else "")
    return pick if len(pick) <= 1000 else pick[:997] + "..."


_TRACEBACK_END = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*")


def failed_outcomes(outcomes: Sequence[Outcome]) -> List[Outcome]:
    """Outcomes of jobs that failed or could not run."""
    return [o for o in outcomes if o.state in ("failed", "not_run")]


def failure_lines(failed: Sequence[Outcome]) -> List[str]:
    """Console lines for jobs that did not complete: ``- job: state: detail``, then the job's
    own error line from its log (see :func:`error_line`) when it has one."""
    lines = []
    for o in failed:
        lines.append(f"- {o.job.name}: {o.state.replace('_', ' ')}: {o.detail}")
        if error_line(o.log_tail):
            lines.append(f"    {error_line(o.log_tail)}")
    return lines
