"""Pictures of protocol summaries and training runs (PNG and SVG, matplotlib).

- :func:`plot_fewshot`: accuracy against shots, one line per trainer, a mean +- std band over
  seeds (for the average over datasets: the std over seeds of the per-seed dataset averages);
- :func:`plot_base2new`: base / new / HM bars per dataset (and the average), one bar group per
  dataset, std over seeds as error bars;
- :func:`plot_training_curves`: the scalars of a run's TensorBoard events, one panel per tag.

Summaries are the ``summary_*.json`` files that ``tools/fewshot.py`` and ``tools/base2new.py``
write. Figures are drawn on ``matplotlib.figure.Figure`` (no pyplot state) at a fixed size
(``FIGSIZE`` inches x ``DPI``), and written atomically.
"""
from __future__ import annotations

import json
import logging
import math
import os
import statistics
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import DasslLiteError
from .utils.io import atomic_write

logger = logging.getLogger(__name__)

FIGSIZE = (6.4, 4.0)  # inches
DPI = 100  # PNG: 640 x 400 pixels
FORMATS = ("png", "svg")
METRIC_COLORS = {"base": "#4C72B0", "new": "#DD8452", "hm": "#55A868"}


def load_summaries(paths: Iterable[str], protocol: str) -> List[Dict]:
    """Read summary JSON files; each must be a ``protocol`` summary."""
    summaries = []
    for path in paths:
        try:
            with open(path) as f:
                summary = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise DasslLiteError(f"Cannot read summary {path}: {e}") from None
        if summary.get("protocol") != protocol:
            raise DasslLiteError(f"{path} is a {summary.get('protocol')!r} summary; expected a "
                                 f"{protocol!r} summary (tools/{protocol}.py writes them)")
        summaries.append(summary)
    return summaries


def select_trainers(summaries: Sequence[Dict], trainers: Optional[Sequence[str]]) -> List[Dict]:
    """The summaries of ``trainers`` in that order (all when None); a trainer without a
    summary is an error naming it and the trainers present."""
    by_name = {s["trainer"]: s for s in summaries}
    if not trainers:
        return list(summaries)
    missing = [t for t in trainers if t not in by_name]
    if missing:
        raise DasslLiteError(f"No summary for trainer(s) {', '.join(missing)}; the summaries "
                             f"given hold {', '.join(by_name) or 'none'}")
    return [by_name[t] for t in trainers]


def _new_figure(title: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    fig.suptitle(title, fontsize=10)
    return fig


def save_figure(fig, stem: str, formats: Sequence[str] = FORMATS) -> List[str]:
    """Write ``fig`` to ``stem.<format>`` for each format (atomically); returns the paths."""
    paths = []
    for fmt in formats:
        path = f"{stem}.{fmt}"
        atomic_write(path, lambda f, fmt=fmt: fig.savefig(f, format=fmt, dpi=DPI))
        paths.append(path)
    return paths


def _warn_missing(trainer: str, where: str, missing: Sequence) -> None:
    if missing:
        logger.warning("%s: %s has no value for seed(s) %s (failed or missing runs); "
                       "left out of the plot", trainer, where, ", ".join(map(str, missing)))


def fewshot_points(summary: Dict, dataset: str) -> List[Tuple[int, float, float]]:
    """(shots, mean, std) of ``dataset`` (a label, or ``average``); points with missing seeds
    are left out (with a warning naming them)."""
    if dataset != "average" and dataset not in summary["datasets"]:
        raise DasslLiteError(f"{summary['trainer']}'s few-shot summary has no dataset "
                             f"{dataset!r}; it has {', '.join(summary['datasets'])} (or average)")
    points = []
    for shots in summary["shots"]:
        stats = ([summary["datasets"][dataset][str(shots)]] if dataset != "average"
                 else [per[str(shots)] for per in summary["datasets"].values()])
        missing = sorted({s for st in stats for s in st["missing"]})
        if missing:
            _warn_missing(summary["trainer"], f"{dataset} at {shots} shots", missing)
            continue
        per_seed = [statistics.fmean(st["per_seed"][str(seed)] for st in stats)
                    for seed in summary["seeds"]]
        std = statistics.pstdev(per_seed) if len(per_seed) > 1 else 0.0
        points.append((shots, statistics.fmean(per_seed), std))
    return points


def plot_fewshot(summaries: Sequence[Dict], stem: str, dataset: str = "average",
                 formats: Sequence[str] = FORMATS) -> List[str]:
    """Accuracy against shots (log2 axis), one line and mean +- std band per trainer."""
    metric = summaries[0]["metric"]
    fig = _new_figure(f"Few-shot {metric}: {dataset} (mean ± std over seeds)")
    ax = fig.add_subplot()
    for summary in summaries:
        points = fewshot_points(summary, dataset)
        if not points:
            continue
        shots, mean, std = zip(*points)
        line, = ax.plot(shots, mean, marker="o", label=summary["trainer"])
        ax.fill_between(shots, [m - s for m, s in zip(mean, std)],
                        [m + s for m, s in zip(mean, std)], color=line.get_color(), alpha=0.2)
    all_shots = sorted({k for s in summaries for k in s["shots"]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(all_shots, [str(k) for k in all_shots])
    ax.set_xlabel("shots per class")
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, stem, formats)


def base2new_bars(summary: Dict) -> Dict[str, Dict[str, Tuple[float, float]]]:
    """``{dataset: {base|new|hm: (mean, std)}}`` plus ``average`` (no std) for the datasets
    whose seeds are all present; the others are named in a warning and left out."""
    bars = {}
    for label, per in summary["datasets"].items():
        missing = sorted({s for k in ("base", "new") for s in per[k]["missing"]})
        if missing:
            _warn_missing(summary["trainer"], label, missing)
            continue
        bars[label] = {k: (per[k]["mean"], per[k]["std"] or 0.0) for k in ("base", "new", "hm")}
    average = summary.get("average") or {}
    if len(bars) == len(summary["datasets"]) and average.get("hm") is not None:
        bars["average"] = {k: (average[k], 0.0) for k in ("base", "new", "hm")}
    return bars


def plot_base2new(summaries: Sequence[Dict], stem: str,
                  formats: Sequence[str] = FORMATS) -> List[str]:
    """Base / new / HM bars per dataset; one shade per trainer within a dataset's group."""
    metric = summaries[0]["metric"]
    fig = _new_figure(f"Base-to-novel {metric} (mean ± std over seeds)")
    ax = fig.add_subplot()
    per_trainer = [(s["trainer"], base2new_bars(s)) for s in summaries]
    labels = list(dict.fromkeys(d for _, bars in per_trainer for d in bars))
    n_bars = 3 * len(per_trainer)
    width = 0.8 / max(n_bars, 1)
    for t, (trainer, bars) in enumerate(per_trainer):
        for m, key in enumerate(("base", "new", "hm")):
            offset = (3 * t + m - (n_bars - 1) / 2) * width
            xs = [i + offset for i, d in enumerate(labels) if d in bars]
            means = [bars[d][key][0] for d in labels if d in bars]
            stds = [bars[d][key][1] for d in labels if d in bars]
            ax.bar(xs, means, width, yerr=stds, color=METRIC_COLORS[key],
                   alpha=1.0 - 0.45 * t / max(len(per_trainer) - 1, 1),
                   label=f"{trainer} {key.upper() if key == 'hm' else key}", capsize=2)
    ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncols=min(3, n_bars))
    return save_figure(fig, stem, formats)


def read_scalars(run_dir: str) -> Dict[str, List[Tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` from the TensorBoard events under ``run_dir``
    (``run_dir/tensorboard`` if it exists)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = os.path.join(run_dir, "tensorboard")
    folder = folder if os.path.isdir(folder) else run_dir
    if not any(n.startswith("events.out.tfevents") for n in _files(folder)):
        raise DasslLiteError(f"No TensorBoard events in {folder} (a run writes them to "
                             f"OUTPUT_DIR/tensorboard)")
    acc = EventAccumulator(folder, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _files(folder: str) -> List[str]:
    return os.listdir(folder) if os.path.isdir(folder) else []


def plot_training_curves(run_dir: str, stem: str, tags: Optional[Sequence[str]] = None,
                         formats: Sequence[str] = FORMATS) -> List[str]:
    """One panel per scalar tag (all tags, or ``tags`` in that order)."""
    scalars = read_scalars(run_dir)
    chosen = list(tags) if tags else sorted(scalars)
    unknown = [t for t in chosen if t not in scalars]
    if unknown:
        raise DasslLiteError(f"No scalar {', '.join(unknown)} in {run_dir}'s events; it has "
                             f"{', '.join(sorted(scalars))}")
    fig = _new_figure(f"Training curves: {os.path.basename(os.path.normpath(run_dir))}")
    cols = min(3, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    for i, tag in enumerate(chosen):
        ax = fig.add_subplot(rows, cols, i + 1)
        steps, values = zip(*scalars[tag])
        ax.plot(steps, values, marker="o" if len(steps) < 3 else None, markersize=3)
        ax.set_title(tag, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return save_figure(fig, stem, formats)
