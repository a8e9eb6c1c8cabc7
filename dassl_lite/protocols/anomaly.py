"""The anomaly detection protocol of CLIP-based zero-/few-shot methods (``tools/anomaly.py``).

Zero-shot cross-dataset, both directions: for each direction A -> B, a training run on A's test
split (``DATASET.ANOMALY.TRAIN_SPLIT test``; AnomalyCLIP / AF-CLIP train on MVTec's test split
to report VisA and the other way round) and an evaluation of those weights on every category of
B. Few-shot: the same weights evaluated on B with ``DATASET.NUM_SHOTS`` k normal reference
images per category, drawn with the run's seed. Every run is ``tools/train.py``; finished runs
are skipped and unfinished ones resumed as in the other protocols. Layout::

    <out>/anomaly/train/<A>/<T>/<cfg>/seed<S>
    <out>/anomaly/<A>_to_<B>/<T>/<cfg>/shots_<k>/seed<S>          (k = 0: zero-shot)
    <out>/anomaly/summary_<T>_<cfg>.json / .csv

The summary holds, per direction and k, the mean +- population std over seeds of every metric
(``image_auroc`` ... ``pixel_aupro``, percent, macro over categories).

``--table``: the same plans for every row of every registered trainer's ``TABLE_ROWS`` and one
table of them (:mod:`.anomaly_table`, ``<out>/anomaly/table.json/.csv/.md``); ``--grid`` adds
the heatmap grid (:mod:`.anomaly_grid`).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from ..cli import add_list_configs_flag, import_user_module, list_configs_requested
from ..errors import DasslLiteError
from ..evaluation.anomaly import METRIC_KEYS, undefined_messages
from ..evaluation.anomaly_threshold import parse_threshold
from ..utils.io import atomic_write_json, atomic_write_text
from . import report
from .anomaly_grid import write_method_grid
from .anomaly_table import (check_dataset_folders, group_rows, render_table, select_rows,
                            table_caption, table_lines, table_rows, write_table)
from .cli import OPTS_EPILOG, _setup_console, split_opts
from .jobs import Job, read_results
from .plans import RunSpec, check_seeds_and_shots, make_job
from .resolve import DatasetConfig, resolve_dataset, resolve_trainer_config
from .runner import InProcessLauncher, Outcome, SubprocessLauncher, run_jobs
from .stats import STD_CONVENTION, seed_stat
from .summary import failed_outcomes, failure_lines, wall_times

__all__ = ["build_parser", "plan_anomaly", "summarize_anomaly", "anomaly_table", "main"]


def build_parser(repo_root: str) -> argparse.ArgumentParser:
    """The flags of ``tools/anomaly.py``."""
    p = argparse.ArgumentParser(
        description="Zero-shot cross-dataset anomaly detection (train on A's test split, "
                    "evaluate on every category of B, both directions) and few-shot (k normal "
                    "references, several seeded draws); mean ± std over seeds.",
        epilog=OPTS_EPILOG)
    p.add_argument("--trainer", nargs="+", metavar="TRAINER", help="required without --table")
    p.add_argument("--config-file",
                   help="trainer YAML path, or a name under configs/trainers/<TRAINER>/ (toy); "
                        "required without --table")
    p.add_argument("--table", action="store_true",
                   help="the method table: every row of every registered trainer's TABLE_ROWS "
                        "(label, config, shots), both directions, one table (default seeds 1 2)")
    p.add_argument("--methods", nargs="+", default=[], metavar="LABEL_OR_TRAINER",
                   help="with --table: only these rows (a row label or a trainer name)")
    p.add_argument("--grid", default="", metavar="PNG",
                   help="with --table: also write a heatmap grid of the first direction and seed "
                        "(one column per table line, beside the image and its ground truth)")
    p.add_argument("--grid-images", type=int, default=2, metavar="N",
                   help="with --grid: anomalous test images per category (plus one normal; "
                        "the first by file path; default 2)")
    p.add_argument("--train-dataset", default="toy_mvtec",
                   help="dataset A whose test split trains (config stem, name or path; "
                        "default toy_mvtec)")
    p.add_argument("--test-datasets", nargs="+", default=["toy_visa"], metavar="DATASET",
                   help="datasets B evaluated (default toy_visa)")
    p.add_argument("--one-way", action="store_true",
                   help="only A -> B (default: also each B -> A)")
    p.add_argument("--shots", type=int, nargs="*", default=[],
                   help="few-shot k values (e.g. 1 2 4); none: zero-shot only")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="default 1 2 3 (--table: 1 2)")
    p.add_argument("--root", default=os.environ.get("DATA", ""), help="default $DATA")
    p.add_argument("--output-root", default="output", help="default ./output")
    p.add_argument("--import", dest="imports", action="append", default=[],
                   metavar="MODULE_OR_FILE")
    p.add_argument("--launcher", default="subprocess", choices=["subprocess", "inprocess"])
    p.add_argument("--threshold", default="", metavar="VALUE|f1max",
                   help="per-image decisions in each evaluation run's scores.txt: a score "
                        "threshold (score >= VALUE is anomalous) or f1max (per category, the "
                        "F1-maximising threshold on the labelled test images; recorded in "
                        "results.json). Default: no decisions")
    p.add_argument("--dry-run", action="store_true", help="list the jobs and their state only")
    p.add_argument("--verbose", action="store_true", help="echo the jobs' output")
    p.add_argument("--table-format", default="github")
    p.add_argument("--configs-dir", default=os.path.join(repo_root, "configs"))
    add_list_configs_flag(p)
    return p


def directions(train: DatasetConfig, tests: Sequence[DatasetConfig],
               one_way: bool) -> List[Tuple[DatasetConfig, DatasetConfig]]:
    """(source, target) pairs: A -> each B, then each B -> A unless ``one_way``."""
    pairs = [(train, t) for t in tests if t != train]
    if not pairs:
        raise DasslLiteError(f"No test dataset besides the training dataset {train.label!r}")
    return pairs if one_way else pairs + [(t, s) for s, t in pairs]


TRAIN_KIND = "train (test split)"


def eval_kind(source: DatasetConfig, k: int) -> str:
    """The job kind of an evaluation: "zero-shot toy_mvtec ->" or "2-shot toy_mvtec ->"."""
    return f"{'zero-shot' if k == 0 else f'{k}-shot'} {source.label} ->"


def run_dir(spec: RunSpec, *parts: str) -> str:
    return os.path.join(spec.output_root, "anomaly", *parts)


def plan_anomaly(spec: RunSpec, pairs: Sequence[Tuple[DatasetConfig, DatasetConfig]],
                 seeds: Sequence[int], shots: Sequence[int], threshold: str = "") -> List[Job]:
    """Per source and seed one training run; per direction, k (0 first) and seed one
    evaluation of its weights (with ``TEST.ANOMALY.THRESHOLD threshold`` when given)."""
    decide = ["TEST.ANOMALY.THRESHOLD", str(threshold)] if threshold != "" else []
    jobs, trains = [], {}
    for source, target in pairs:
        for seed in seeds:
            if (source.label, seed) not in trains:
                out = run_dir(spec, "train", source.label, spec.trainer, spec.cfg_label,
                              f"seed{seed}")
                trains[source.label, seed] = make_job(
                    spec, TRAIN_KIND, source, seed, 0, out,
                    ["DATASET.ANOMALY.TRAIN_SPLIT", "test"])
                jobs.append(trains[source.label, seed])
            for k in [0, *shots]:
                out = run_dir(spec, f"{source.label}_to_{target.label}", spec.trainer,
                              spec.cfg_label, f"shots_{k}", f"seed{seed}")
                jobs.append(make_job(spec, eval_kind(source, k), target, seed, k, out,
                                     ["DATASET.NUM_SHOTS", str(k), *decide],
                                     train_job=trains[source.label, seed]))
    return jobs


def _metric_stat(runs: Dict[int, Optional[Dict]], metric: str) -> Dict:
    """``seed_stat`` of one metric; ``"undefined": True`` when every seed ran but the metric is
    undefined (null) in each (e.g. pixel metrics of a dataset without defect pixels)."""
    stat = seed_stat({s: (r or {}).get(metric) for s, r in runs.items()})
    if runs and all(r is not None and r.get(metric) is None for r in runs.values()):
        stat.update(missing=[], undefined=True)
    return stat


def summarize_anomaly(spec: RunSpec, pairs, seeds: Sequence[int], shots: Sequence[int],
                      outcomes: Sequence[Outcome]) -> Dict:
    """Per direction and k: every metric's mean ± std over seeds (None when a seed is missing)."""
    results = [read_results(o.job.output_dir) if o.ok else None for o in outcomes]
    by_key = {(o.job.kind, o.job.dataset, o.job.shots, o.job.seed): r
              for o, r in zip(outcomes, results) if o.job.is_eval}
    table = {}
    for source, target in pairs:
        per_k = {}
        for k in [0, *shots]:
            runs = {s: by_key.get((eval_kind(source, k), target.label, k, s)) for s in seeds}
            per_k[str(k)] = {m: _metric_stat(runs, m) for m in METRIC_KEYS}
        table[f"{source.label} -> {target.label}"] = per_k
    failed = [{"job": o.job.name, "output_dir": o.job.output_dir, "state": o.state,
               "detail": o.detail} for o in outcomes if not o.ok]
    return {"protocol": "anomaly", "trainer": spec.trainer, "config": spec.cfg_label,
            "config_file": spec.config_file, "seeds": list(seeds), "shots": [0, *shots],
            "metrics": list(METRIC_KEYS), "std_convention": STD_CONVENTION,
            "directions": table, "failed_jobs": failed,
            "wall_time": wall_times(outcomes, results)}


def anomaly_table(summary: Dict, fmt: str = "github") -> str:
    """Direction | shots | every metric (mean ± std over seeds)."""
    rows = [[direction, "zero-shot" if k == "0" else f"{k}-shot",
             *("undefined" if stats[m].get("undefined") else report.fmt_stat(stats[m])
               for m in summary["metrics"])]
            for direction, per_k in summary["directions"].items() for k, stats in per_k.items()]
    return report.render(["Direction", "Shots", *summary["metrics"]], rows, fmt)


def write_anomaly_summary(summary: Dict, stem: str) -> List[str]:
    """``<stem>.json`` and ``<stem>.csv`` (one row per direction, k and metric)."""
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    atomic_write_json(stem + ".json", summary)
    rows = [report._stat_row(st, trainer=summary["trainer"], config=summary["config"],
                             direction=d, shots=k, metric=m)
            for d, per_k in summary["directions"].items() for k, stats in per_k.items()
            for m, st in stats.items()]
    atomic_write_text(stem + ".csv", report.to_csv(rows))
    return [stem + ".json", stem + ".csv"]


def _check_flags(args) -> None:
    """The flags of the chosen mode (a protocol run or ``--table``), seeds defaulted."""
    if args.table:
        given = [f for f, v in (("--trainer", args.trainer), ("--config-file", args.config_file),
                                ("--shots", args.shots)) if v]
        if given:
            raise DasslLiteError(f"--table takes methods, configs and shots from the trainers' "
                                 f"TABLE_ROWS; drop {' and '.join(given)} (use --methods to "
                                 f"choose rows)")
        if args.grid_images < 1:
            raise DasslLiteError(f"--grid-images must be >= 1; got {args.grid_images}")
        if args.seeds is None:
            args.seeds = [1, 2]
        return
    extra = [f for f, v in (("--methods", args.methods), ("--grid", args.grid)) if v]
    if extra:
        raise DasslLiteError(f"{' and '.join(extra)} only go with --table")
    if not args.trainer or not args.config_file:
        raise DasslLiteError("--trainer and --config-file are required (or --table for the "
                             "method table)")
    if args.seeds is None:
        args.seeds = [1, 2, 3]


def _plan(args, opts):
    """(pairs, [(spec, few-shot k values, jobs, (trainer, config as given))], table rows or
    None)."""
    for module in args.imports:
        import_user_module(module)
    _check_flags(args)
    if not args.root:
        raise DasslLiteError("No dataset root: pass --root DIR or set the DATA environment "
                             "variable")
    if any(k < 1 for k in args.shots):
        raise DasslLiteError(f"--shots must be positive; got {args.shots}")
    check_seeds_and_shots(args.seeds, args.shots)
    threshold = parse_threshold(args.threshold, "--threshold")
    dataset_dir = os.path.join(args.configs_dir, "datasets")
    pairs = directions(resolve_dataset(args.train_dataset, dataset_dir),
                       [resolve_dataset(t, dataset_dir) for t in args.test_datasets], args.one_way)
    trainer_dir = os.path.join(args.configs_dir, "trainers")
    rows = None
    if args.table:
        rows = select_rows(table_rows(), args.methods)
        check_dataset_folders(args.root, list({d.label: d for p in pairs for d in p}.values()))
        groups = group_rows(rows)
    else:
        groups = [(t, args.config_file, list(args.shots)) for t in args.trainer]
    threshold = "" if threshold is None else str(threshold)
    plans = []
    for trainer, config, shots in groups:
        spec = RunSpec(trainer, resolve_trainer_config(config, trainer, trainer_dir), args.root,
                       args.output_root, list(args.imports), opts)
        plans.append((spec, shots, plan_anomaly(spec, pairs, args.seeds, shots, threshold),
                      (trainer, config)))
    return pairs, plans, rows


def main(argv: Optional[Sequence[str]] = None, repo_root: str = ".") -> int:
    """Exit status: 0 all jobs finished, 1 some failed, 2 bad arguments, 130 interrupted."""
    flags, opts = split_opts(sys.argv[1:] if argv is None else argv)
    listed = list_configs_requested(flags)
    if listed is not None:
        return listed
    args = build_parser(repo_root).parse_args(flags)
    _setup_console()
    try:
        pairs, plans, rows = _plan(args, opts)
    except DasslLiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    launcher = (InProcessLauncher() if args.launcher == "inprocess" else
                SubprocessLauncher(os.path.join(repo_root, "tools", "train.py"), echo=args.verbose))
    try:
        outcomes = run_jobs([j for _, _, jobs, _ in plans for j in jobs], launcher,
                            args.dry_run)
    except KeyboardInterrupt:
        print("\nInterrupted. Run the same command again to resume.", file=sys.stderr)
        return 130
    if args.dry_run:
        return 0
    runs = {}
    for spec, shots, jobs, key in plans:
        ids = {id(j) for j in jobs}
        mine = [o for o in outcomes if id(o.job) in ids]
        summary = summarize_anomaly(spec, pairs, args.seeds, shots, mine)
        runs[key] = (summary, mine)
        stem = run_dir(spec, f"summary_{spec.trainer}_{spec.cfg_label}")
        written = write_anomaly_summary(summary, stem)
        if rows is None:
            print(f"Summary written to {' and '.join(written)}")
            print(f"\n{spec.trainer} ({spec.cfg_label}), seeds {' '.join(map(str, args.seeds))}: "
                  f"percent, macro over categories, mean ± population std over seeds\n"
                  + anomaly_table(summary, args.table_format))
    lines = [] if rows is None else table_lines(rows, runs, pairs)
    if rows is not None:
        stem = os.path.join(args.output_root, "anomaly", "table")
        failed = [{"job": o.job.name, "output_dir": o.job.output_dir, "state": o.state}
                  for o in outcomes if not o.ok]
        print(f"Table written to {', '.join(write_table(lines, pairs, args.seeds, failed, stem))}")
        print(f"\n{table_caption(args.seeds)}\n" + render_table(lines, pairs, args.table_format))
    for line in undefined_notes(outcomes):
        print(line)
    decided = [o.job.output_dir for o in outcomes if o.ok and o.job.is_eval]
    if args.threshold and decided:
        print(f"Per-image decisions (--threshold {args.threshold}) are in scores.txt of each "
              f"evaluation run, e.g. {os.path.join(decided[0], 'scores.txt')}")
    failed = failed_outcomes(outcomes)
    for line in failure_lines(failed):
        print(line)
    if args.grid and failed:
        print(f"No heatmap grid written to {args.grid}: some runs failed (see above)")
    elif args.grid:
        columns = [(ln["label"], ln["shots"], jobs) for ln in lines
                   for _, _, jobs, key in plans if key == (ln["trainer"], ln["config_key"])]
        try:
            path = write_method_grid(args.grid, columns, pairs[0], args.seeds[0],
                                     args.grid_images)
        except DasslLiteError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"Heatmap grid written to {path}")
    return 1 if failed else 0


def undefined_notes(outcomes: Sequence[Outcome]) -> List[str]:
    """For each finished evaluation whose ``results.json`` lists undefined metrics: which
    metrics of which category, and why (one line each)."""
    lines = []
    for o in outcomes:
        results = read_results(o.job.output_dir) if o.ok and o.job.is_eval else None
        undefined = (results or {}).get("undefined") or {}
        if undefined:
            lines += undefined_messages(undefined, len(results.get("per_category") or {}),
                                        prefix=f"- {o.job.name}: ")
    return lines
