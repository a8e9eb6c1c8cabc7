"""The one-command method table of ``tools/anomaly.py --table``.

Methods are not listed here: every registered trainer that declares ::

    TABLE_ROWS = (("APRILGAN zero-shot", "toy", (0,)), ("APRILGAN few-shot", "toy", (1,)))

(label, config file under ``configs/trainers/<T>/``, shots; k = 0 zero-shot, k > 0 k normal
references per category) gives the table one line per (label, k), in registration order.
Rows of one trainer with the same config share their runs: one protocol plan per (trainer,
config) with the union of the rows' shots, the same run folders, skip and resume as
``tools/anomaly.py --trainer T --config-file C --shots ...``. The table holds, per line and
direction, the seven metrics as mean +- population std over seeds, and the mean wall time of the
trainer's training runs and of the line's evaluation runs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import DasslLiteError
from ..evaluation.anomaly import METRIC_KEYS
from ..registry import DATASET_REGISTRY, TRAINER_REGISTRY
from ..utils.io import atomic_write_json, atomic_write_text
from . import report
from .jobs import read_results
from .resolve import DatasetConfig
from .runner import Outcome
from .stats import STD_CONVENTION, mean_std

__all__ = ["TableRow", "table_rows", "select_rows", "check_dataset_folders", "table_lines",
           "render_table", "write_table", "METRIC_HEADERS"]

# Column names of the seven metrics (papers' abbreviations), in METRIC_KEYS order.
METRIC_HEADERS = dict(zip(METRIC_KEYS, ("I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP",
                                        "P-F1max", "AUPRO")))


@dataclass(frozen=True)
class TableRow:
    """One ``TABLE_ROWS`` entry of a trainer."""

    label: str
    trainer: str
    config: str
    shots: Tuple[int, ...]


def _check_row(trainer: str, row) -> TableRow:
    """A ``(label, config, shots)`` tuple as a TableRow; an error names the trainer and row."""
    ok = (isinstance(row, tuple) and len(row) == 3 and isinstance(row[0], str) and row[0]
          and isinstance(row[1], str) and row[1] and isinstance(row[2], tuple) and row[2]
          and all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in row[2]))
    if not ok:
        raise DasslLiteError(
            f"{trainer}.TABLE_ROWS: each row must be (label: str, config: str, shots: tuple of "
            f"ints >= 0), e.g. ('{trainer} zero-shot', 'toy', (0,)); got {row!r}")
    if len(set(row[2])) != len(row[2]):
        raise DasslLiteError(f"{trainer}.TABLE_ROWS: row {row[0]!r} lists a shot count twice: "
                             f"{row[2]}")
    return TableRow(row[0], trainer, row[1], tuple(row[2]))


def table_rows(registry=TRAINER_REGISTRY) -> List[TableRow]:
    """The ``TABLE_ROWS`` of every registered trainer that has them, in registration order;
    labels must be unique across trainers."""
    rows: List[TableRow] = []
    for name, cls in registry.in_registration_order():
        for row in getattr(cls, "TABLE_ROWS", None) or ():
            rows.append(_check_row(name, row))
    seen: Dict[str, str] = {}
    for r in rows:
        if r.label in seen:
            raise DasslLiteError(f"Table row label {r.label!r} is declared by {seen[r.label]} "
                                 f"and {r.trainer}; labels must be unique")
        seen[r.label] = r.trainer
    return rows


def select_rows(rows: Sequence[TableRow], methods: Sequence[str]) -> List[TableRow]:
    """The rows named in ``methods`` (a row label or a trainer name, case-insensitive; all when
    empty), in table order; an unknown name is an error listing the known ones."""
    if not rows:
        raise DasslLiteError("No registered trainer declares TABLE_ROWS (load trainers with "
                             "--import, or give an anomaly trainer TABLE_ROWS)")
    if not methods:
        return list(rows)
    wanted = {m.lower() for m in methods}
    known = {r.label.lower() for r in rows} | {r.trainer.lower() for r in rows}
    unknown = [m for m in methods if m.lower() not in known]
    if unknown:
        labels = ", ".join(repr(r.label) for r in rows)
        trainers = ", ".join(dict.fromkeys(r.trainer for r in rows))
        raise DasslLiteError(f"Unknown method {', '.join(map(repr, unknown))} in --methods. Row "
                             f"labels: {labels}; trainers (all their rows): {trainers}")
    return [r for r in rows if r.label.lower() in wanted or r.trainer.lower() in wanted]


def group_rows(rows: Sequence[TableRow]) -> List[Tuple[str, str, List[int]]]:
    """(trainer, config, few-shot k values) per (trainer, config), in first-row order: the rows
    of one trainer and config share one protocol plan (k = 0 is always planned)."""
    groups: Dict[Tuple[str, str], List[int]] = {}
    for r in rows:
        ks = groups.setdefault((r.trainer, r.config), [])
        ks += [k for k in r.shots if k > 0 and k not in ks]
    return [(t, c, sorted(ks)) for (t, c), ks in groups.items()]


def check_dataset_folders(root: str, datasets: Sequence[DatasetConfig]) -> None:
    """``root`` must exist and hold each dataset's folder (``dataset_dir`` of its registered
    class); a missing one is an error with the dataset's instructions (for the toy world: the
    command that builds it). The table does not generate data into a mistyped root."""
    if not root:
        raise DasslLiteError("No dataset root: pass --root DIR or set the DATA environment "
                             "variable")
    for d in datasets:
        cls = DATASET_REGISTRY.get(d.name)
        folder = os.path.join(root, getattr(cls, "dataset_dir", "") or "")
        if not os.path.isdir(root) or not os.path.isdir(folder):
            where = f"--root {root} does not exist" if not os.path.isdir(root) else \
                f"--root {root} has no {os.path.basename(folder)}/ ({d.name})"
            build = getattr(cls, "build_command", "")
            hint = (f"build it with: {build.format(root=root)}" if build else
                    f"instructions: {getattr(cls, 'instructions', '') or 'see DATASETS.md'}")
            raise DasslLiteError(f"{where}; {hint}")


def _direction_key(source: DatasetConfig, target: DatasetConfig) -> str:
    return f"{source.label} -> {target.label}"


def _wall(outcomes: Sequence[Outcome], keep) -> Optional[Dict]:
    """Mean and population std of ``wall_time_s`` over the finished jobs ``keep`` selects."""
    seconds = []
    for o in outcomes:
        if o.ok and keep(o.job):
            r = read_results(o.job.output_dir) or {}
            if r.get("wall_time_s") is not None:
                seconds.append(float(r["wall_time_s"]))
    if not seconds:
        return None
    mean, std = mean_std(seconds)
    return {"mean": round(mean, 2), "std": round(std, 2), "n": len(seconds)}


def table_lines(rows: Sequence[TableRow], runs: Dict[Tuple[str, str], Tuple[Dict, List]],
                pairs) -> List[Dict]:
    """One dict per (row, k): label, trainer, config, shots, per direction the metric
    statistics and ``train_s`` / ``eval_s``. ``runs[trainer, config]`` is the (protocol
    summary, outcomes) of that trainer and config (as the row names it)."""
    lines = []
    for r in rows:
        summary, outcomes = runs[r.trainer, r.config]
        for k in r.shots:
            directions = {_direction_key(s, t): summary["directions"][_direction_key(s, t)][str(k)]
                          for s, t in pairs}
            lines.append({"label": r.label, "trainer": r.trainer, "config": summary["config"],
                          "config_key": r.config, "shots": k, "directions": directions,
                          "train_s": _wall(outcomes, lambda j: not j.is_eval),
                          "eval_s": _wall(outcomes, lambda j, k=k: j.is_eval and j.shots == k)})
    return lines


def _cell(stat: Dict) -> str:
    return "undefined" if stat.get("undefined") else report.fmt_stat(stat)


def _seconds(stat: Optional[Dict]) -> str:
    return "-" if stat is None else f"{stat['mean']:.1f}"


def table_headers(pairs) -> List[str]:
    return ["Method", "k", *(f"{s.label}->{t.label} {METRIC_HEADERS[m]}"
                             for s, t in pairs for m in METRIC_KEYS), "train s", "eval s"]


def render_table(lines: Sequence[Dict], pairs, fmt: str = "github") -> str:
    """Method | k | direction x metric (mean ± std over seeds) | train s | eval s."""
    body = [[ln["label"], str(ln["shots"]),
             *(_cell(ln["directions"][_direction_key(s, t)][m]) for s, t in pairs
               for m in METRIC_KEYS), _seconds(ln["train_s"]), _seconds(ln["eval_s"])]
            for ln in lines]
    return report.render(table_headers(pairs), body, fmt)


def table_caption(seeds: Sequence[int]) -> str:
    return (f"Percent, macro over the target dataset's categories, mean ± population std over "
            f"seeds {' '.join(map(str, seeds))}; k = 0 zero-shot, k > 0 k normal references per "
            f"category. I = image, P = pixel. train s: mean wall time of the method's training "
            f"runs (build, train, final test; ZeroshotAD trains nothing); eval s: of the line's "
            f"evaluation runs.")


def write_table(lines: Sequence[Dict], pairs, seeds: Sequence[int], failed: Sequence[Dict],
                stem: str) -> List[str]:
    """``<stem>.json`` (everything), ``<stem>.csv`` (one row per line, direction and metric)
    and ``<stem>.md`` (the caption and the table)."""
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    atomic_write_json(stem + ".json", {
        "protocol": "anomaly_table", "seeds": list(seeds),
        "directions": [_direction_key(s, t) for s, t in pairs], "metrics": list(METRIC_KEYS),
        "std_convention": STD_CONVENTION, "lines": list(lines), "failed_jobs": list(failed)})
    rows = [report._stat_row(st, method=ln["label"], trainer=ln["trainer"],
                             config=ln["config"], shots=ln["shots"], direction=d, metric=m)
            for ln in lines for d, stats in ln["directions"].items() for m, st in stats.items()]
    atomic_write_text(stem + ".csv", report.to_csv(rows))
    atomic_write_text(stem + ".md", table_caption(seeds) + "\n\n"
                      + render_table(lines, pairs, "github") + "\n")
    return [stem + ".json", stem + ".csv", stem + ".md"]
