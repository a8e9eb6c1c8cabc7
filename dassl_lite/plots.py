"""Pictures of protocol summaries and training runs (PNG and SVG, matplotlib).

- :func:`plot_fewshot`: accuracy against shots, one line per trainer, a mean +- std band over
  seeds (for the average over datasets: the std over seeds of the per-seed dataset averages);
- :func:`plot_base2new`: base / new / HM bars per dataset (and the average), one bar group per
  dataset (colour: metric, hatching: trainer), std over seeds as error bars, the value axis
  around the data and the legend right of the axes;
- :func:`plot_training_curves`: the scalars of runs' TensorBoard events, one panel per tag
  (axis labels: the step and the metric), several runs overlaid, optional smoothing.

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
BAR_GAP = 0.5  # gap between a dataset's base, new and HM bars, in bar widths
TRAINER_HATCHES = ("", "///", "...", "xxx", "\\\\\\", "ooo")  # one per trainer in a figure


# What each summary must hold (``tools/<protocol>.py`` writes them): top-level keys, then the
# keys of each dataset's entry (few-shot: per shot count) and of each statistic in it.
SUMMARY_KEYS = {"fewshot": ("protocol", "trainer", "metric", "shots", "seeds", "datasets"),
                "base2new": ("protocol", "trainer", "metric", "datasets")}
STAT_KEYS = {"fewshot": ("per_seed", "missing"), "base2new": ("mean", "std", "missing")}


def load_summaries(paths: Iterable[str], protocol: str) -> List[Dict]:
    """Read summary JSON files; each must be a ``protocol`` summary with the keys the plots
    read (an error names the file and the missing key)."""
    summaries = []
    for path in paths:
        try:
            with open(path) as f:
                summary = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise DasslLiteError(f"Cannot read summary {path}: {e}") from None
        check_summary(path, summary, protocol)
        summaries.append(summary)
    return summaries


def check_summary(path: str, summary, protocol: str) -> None:
    """Raise DasslLiteError naming ``path`` and what is missing unless ``summary`` is a
    ``protocol`` summary as ``tools/<protocol>.py`` writes it."""
    made_by = f"tools/{protocol}.py writes them as summary_*.json"
    if not isinstance(summary, dict):
        raise DasslLiteError(f"{path} holds a JSON {type(summary).__name__}; expected a "
                             f"{protocol} summary (an object with keys "
                             f"{', '.join(SUMMARY_KEYS[protocol])}; {made_by})")
    if summary.get("protocol") != protocol:
        raise DasslLiteError(f"{path} is a {summary.get('protocol')!r} summary; expected a "
                             f"{protocol!r} summary ({made_by})")
    _require(path, "", summary, SUMMARY_KEYS[protocol], made_by)
    if not isinstance(summary["datasets"], dict):
        raise DasslLiteError(f"{path}: 'datasets' must map dataset labels to their results; "
                             f"got a {type(summary['datasets']).__name__} ({made_by})")
    entries = ((str(k) for k in summary["shots"]) if protocol == "fewshot"
               else ("base", "new", "hm"))
    entries = list(entries)
    for label, per in summary["datasets"].items():
        _require(path, f"datasets.{label}", per, entries, made_by)
        for entry in entries:
            _require(path, f"datasets.{label}.{entry}", per[entry], STAT_KEYS[protocol], made_by)


def _require(path: str, where: str, obj, keys: Sequence[str], made_by: str) -> None:
    if not isinstance(obj, dict):
        raise DasslLiteError(f"{path}: {where} must be an object with keys {', '.join(keys)}; "
                             f"got a {type(obj).__name__} ({made_by})")
    missing = [k for k in keys if k not in obj]
    if missing:
        place = f"{where} lacks" if where else "lacks"
        raise DasslLiteError(f"{path}: {place} {', '.join(map(repr, missing))}; expected keys "
                             f"{', '.join(keys)} ({made_by})")


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
    """Base / new / HM bars per dataset: colour = metric, hatching = trainer; the value axis
    spans the data (not 0-100) and the legend sits outside the bars, on the right."""
    metric = summaries[0]["metric"]
    fig = _new_figure(f"Base-to-novel {metric} (mean ± std over seeds)")
    ax = fig.add_subplot()
    per_trainer = [(s["trainer"], base2new_bars(s)) for s in summaries]
    labels = list(dict.fromkeys(d for _, bars in per_trainer for d in bars))
    n_t = len(per_trainer)
    gap = BAR_GAP if n_t > 1 else 0.1  # base, new, HM sub-groups of n_t bars, small gaps
    width = 0.8 / (3 * n_t + 2 * gap)
    for t, (trainer, bars) in enumerate(per_trainer):
        for m, key in enumerate(("base", "new", "hm")):
            offset = (m * (n_t + gap) + t + 0.5) * width - 0.4
            xs = [i + offset for i, d in enumerate(labels) if d in bars]
            means = [bars[d][key][0] for d in labels if d in bars]
            stds = [bars[d][key][1] for d in labels if d in bars]
            ax.bar(xs, means, width, yerr=stds, color=METRIC_COLORS[key],
                   hatch=TRAINER_HATCHES[t % len(TRAINER_HATCHES)], edgecolor="white",
                   linewidth=0.5, capsize=2, error_kw={"elinewidth": 0.8})
    ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 4 else 0, fontsize=8)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(*value_range([v for _, bars in per_trainer for per in bars.values()
                              for v in per.values()]))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    _base2new_legend(ax, [trainer for trainer, _ in per_trainer])
    return save_figure(fig, stem, formats)


def value_range(points: Iterable[Tuple[float, float]], pad: float = 0.15,
                low: float = 0.0, high: float = 100.0) -> Tuple[float, float]:
    """Axis limits around ``(mean, std)`` points: their lowest and highest mean -+ std, widened
    by ``pad`` of the span (at least 2 units) and kept within [low, high]."""
    points = list(points)
    if not points:
        return low, high
    lo = min(m - s for m, s in points)
    hi = max(m + s for m, s in points)
    margin = max(pad * (hi - lo), 2.0)
    return max(low, lo - margin), min(high, hi + margin)


def _base2new_legend(ax, trainers: Sequence[str]) -> None:
    """One legend right of the axes: the metric colours, then one hatching per trainer."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=METRIC_COLORS[k], label=k.upper() if k == "hm" else k)
               for k in ("base", "new", "hm")]
    if len(trainers) > 1:
        handles += [Patch(facecolor="#E8E8E8", edgecolor="#444444", label=t,
                          hatch=TRAINER_HATCHES[i % len(TRAINER_HATCHES)])
                    for i, t in enumerate(trainers)]
    title = None if len(trainers) > 1 else trainers[0]
    ax.legend(handles=handles, title=title, fontsize=7, title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


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


def smooth_ema(values: Sequence[float], weight: float) -> List[float]:
    """TensorBoard's smoothing: an exponential moving average with weight ``weight`` in [0, 1)
    (0: the values themselves), debiased so the first points are not pulled towards 0."""
    if not 0.0 <= weight < 1.0:
        raise DasslLiteError(f"--smooth must be >= 0 and < 1 (the weight of the moving "
                             f"average, as TensorBoard's slider); got {weight}")
    out, last = [], 0.0
    for i, v in enumerate(values, 1):
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight ** i))
    return out


def run_labels(run_dirs: Sequence[str]) -> List[str]:
    """Short names telling runs apart: the fewest trailing path parts that differ
    (``seed1``, ``seed2``; ``CoOp/seed1``, ``MaPLe/seed1``)."""
    parts = [os.path.abspath(d).split(os.sep) for d in run_dirs]
    for n in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-n:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [os.path.abspath(d) for d in run_dirs]


PERCENT_METRICS = ("acc", "accuracy", "error", "macro_f1", "perclass_accuracy")


def _axis_labels(ax, tag: str) -> None:
    name = tag.rpartition("/")[2]
    # training scalars are written per iteration; older runs wrote test/val results per epoch
    ax.set_xlabel("iteration" if tag.startswith("train/") else "step", fontsize=7)
    ax.set_ylabel(name + (" (%)" if name in PERCENT_METRICS else ""), fontsize=7)


def plot_training_curves(run_dirs, stem: str, tags: Optional[Sequence[str]] = None,
                         formats: Sequence[str] = FORMATS, smooth: float = 0.0) -> List[str]:
    """One panel per scalar tag (all tags of the runs, or ``tags`` in that order), one line
    per run (``run_dirs``: a folder or several, overlaid). With ``smooth`` > 0 each line is the
    moving average (:func:`smooth_ema`) over the raw values drawn faintly."""
    run_dirs = [run_dirs] if isinstance(run_dirs, str) else list(run_dirs)
    smooth_ema([], smooth)  # check the weight before reading anything
    runs = [(d, read_scalars(d)) for d in run_dirs]
    chosen = list(tags) if tags else sorted({t for _, scalars in runs for t in scalars})
    for run_dir, scalars in runs:
        unknown = [t for t in chosen if t not in scalars]
        if unknown and (tags or len(runs) == 1):
            raise DasslLiteError(f"No scalar {', '.join(unknown)} in {run_dir}'s events; it "
                                 f"has {', '.join(sorted(scalars))}")
    names = run_labels(run_dirs)
    title = ", ".join(names) if len(runs) <= 3 else f"{len(runs)} runs"
    fig = _new_figure(f"Training curves: {title}" + (f" (smoothed {smooth})" if smooth else ""))
    cols = min(3, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for i, tag in enumerate(chosen):
        ax = fig.add_subplot(rows, cols, i + 1)
        for (run_dir, scalars), name, color in zip(runs, names, colors):
            if tag in scalars:
                _draw_curve(ax, tag, scalars[tag], smooth, color, name)
        ax.set_title(tag, fontsize=8)
        _axis_labels(ax, tag)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if len(runs) > 1:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=c, label=n) for n, c in zip(names, colors)]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(runs)),
                   fontsize=7, frameon=False)
    return save_figure(fig, stem, formats)


SMOOTH_MIN_POINTS = 10  # shorter curves (per-epoch test results) are drawn as they are


def label_is_schedule(tag: str) -> bool:
    """A learning-rate tag: a schedule, not a noisy measurement, so it is never smoothed."""
    return tag.rpartition("/")[2] in ("lr", "learning_rate")


def _draw_curve(ax, tag: str, points: Sequence[Tuple[int, float]], smooth: float, color: str,
                label: str) -> None:
    steps, values = zip(*points)
    marker = "o" if len(steps) < 3 else None
    if smooth and len(values) >= SMOOTH_MIN_POINTS and not label_is_schedule(tag):
        ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
        values = smooth_ema(values, smooth)
    ax.plot(steps, values, color=color, marker=marker, markersize=3, label=label)
