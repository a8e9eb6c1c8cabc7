"""Command line of ``tools/vtab.py``: the VPT paper's VTAB-1k protocol (:mod:`.vtab`) run with the
protocol runner's launchers, then one table (:mod:`.vtab_table`).

Exit status: 0 when every job finished, 1 when some failed or could not run (their values are
marked missing), 2 for bad arguments or configs (reported before any job runs), 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from ..cli import add_list_configs_flag, import_user_module
from ..config.sections import trainer_sections
from ..errors import DasslLiteError
from ..registry import TRAINER_REGISTRY
from .cli import INTERRUPTED, OPTS_EPILOG, add_run_arguments, prepare, run_with_launcher
from .jobs import read_results
from .plans import RunSpec, check_seeds_and_shots, expected_config
from .resolve import resolve_trainer_config
from .runner import Outcome
from .summary import failed_outcomes, failure_lines, wall_times
from .vtab import (GRID_SOURCE, LR_SCALES, PAPER_GRIDS, TaskPlan, check_opts, grid_axes,
                   grid_points, plan_task, resolve_tasks, select_best)
from .vtab_table import config_row, markdown, summary_header, task_entry, write_vtab_summary

# KMnP/vpt tune_vtab.py main(): "final run 5 times with fixed seed".
UPSTREAM_SEEDS = (42, 44, 82, 100, 800)
# --toy: the toy tasks, the four toy configs, three seeds and a 2 x 2 grid per transfer type
# (learning rates per 256 images, as the paper's grid; the toy configs train at batch 32).
TOY_CONFIGS = ("toy_vtab_shallow", "toy_vtab_deep", "toy_vtab_linear", "toy_vtab_end2end")
TOY_SEEDS = (1, 2, 3)
TOY_GRIDS: Dict[str, Tuple[Tuple[float, ...], Tuple[float, ...]]] = {
    "prompt": ((0.8, 3.2), (0.001, 0.0)),
    "linear": ((0.8, 3.2), (0.001, 0.0)),
    "end2end": ((0.02, 0.08), (0.001, 0.0)),
}
TOY_GRID_SOURCE = "the --toy grid (dassl_lite/protocols/vtab_cli.py TOY_GRIDS)"


def build_parser(repo_root: str) -> argparse.ArgumentParser:
    """The flags of ``tools/vtab.py``."""
    p = argparse.ArgumentParser(
        description="The VPT paper's VTAB-1k protocol: per task and config, tune on train800 -> "
                    "val200 over a learning-rate x weight-decay grid, retrain the best point on "
                    "train800val200 with each seed, test on test; one table.",
        epilog=OPTS_EPILOG)
    p.add_argument("--trainer", default="VPTSupervised", help="default VPTSupervised")
    p.add_argument("--config-file", nargs="+", default=None, metavar="CONFIG",
                   help="trainer YAML paths or names under configs/trainers/<TRAINER>/; one "
                        "table row each (--toy: " + " ".join(TOY_CONFIGS) + ")")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                   help="task names, all (default), natural, specialized, structured or toy")
    p.add_argument("--toy", action="store_true",
                   help="the toy preset: toy tasks, toy configs, seeds 1 2 3 and a 2 x 2 grid "
                        "per transfer type, for CPU seconds")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="final-run seeds (default KMnP/vpt's 42 44 82 100 800; --toy: 1 2 3)")
    p.add_argument("--tune-seed", type=int, default=None,
                   help="seed of the tuning runs (default: the first of --seeds)")
    p.add_argument("--lr", type=float, nargs="+", default=None,
                   help="learning rates per 256 images (default: the paper's grid of the "
                        "config's MODEL.TRANSFER_TYPE)")
    p.add_argument("--wd", type=float, nargs="+", default=None,
                   help="weight decays (default: the paper's grid)")
    p.add_argument("--lr-scale", default="batch", choices=LR_SCALES,
                   help="batch (default): a run's OPTIM.LR is lr * batch size / 256, as "
                        "KMnP/vpt; none: OPTIM.LR is lr")
    add_run_arguments(p, repo_root)
    add_list_configs_flag(p)
    return p


def _specs(args, opts: List[str]) -> List[RunSpec]:
    TRAINER_REGISTRY.get(args.trainer)  # an unknown name, not a missing config folder
    configs = args.config_file or (list(TOY_CONFIGS) if args.toy else None)
    if not configs:
        raise DasslLiteError("--config-file is required (or --toy for the toy preset)")
    trainer_dir = os.path.join(args.configs_dir, "trainers")
    specs = [RunSpec(args.trainer, resolve_trainer_config(c, args.trainer, trainer_dir),
                     args.root, args.output_root, list(args.imports), opts) for c in configs]
    labels = [s.cfg_label for s in specs]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise DasslLiteError(f"--config-file: two configs are named {', '.join(twice)} (output "
                             f"folders and table rows are named by the file stem)")
    return specs


def _reads_transfer_type(trainer: str) -> bool:
    """Whether ``trainer`` reads ``MODEL.TRANSFER_TYPE`` (VPTSupervised and its subclasses: the
    trainers of section ``TRAINER.VPTSUPERVISED``); the key exists in every config."""
    return "VPTSUPERVISED" in (trainer_sections(TRAINER_REGISTRY.get(trainer)) or ())


def _grid(spec: RunSpec, args, dataset_name: str) -> Tuple[list, Dict]:
    """The grid points of ``spec`` and their description for the summary."""
    flags = ["--root", spec.root, "--trainer", spec.trainer, "--config-file", spec.config_file]
    cfg = expected_config(flags + ["DATASET.NAME", dataset_name] + list(spec.opts))
    transfer = cfg.MODEL.get("TRANSFER_TYPE") if _reads_transfer_type(spec.trainer) else None
    batch = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
    grids, name = (TOY_GRIDS, TOY_GRID_SOURCE) if args.toy else (PAPER_GRIDS, GRID_SOURCE)
    lrs, wds, source = grid_axes(transfer, args.lr, args.wd,
                                 f"{spec.trainer} ({spec.cfg_label})", grids, name)
    scale = batch / 256 if args.lr_scale == "batch" else 1.0
    return grid_points(lrs, wds, scale), {
        "lr": lrs, "wd": wds, "source": source, "transfer_type": transfer, "batch_size": batch,
        "optim_lr_per_lr": scale}


def _plan(args, opts: List[str], catalogue) -> Tuple[List[TaskPlan], Dict]:
    for module in args.imports:
        import_user_module(module)
    if not args.root:
        raise DasslLiteError("No dataset root: pass --root DIR or set the DATA environment "
                             "variable")
    check_opts(opts)
    tasks = resolve_tasks(args.tasks or (["toy"] if args.toy else ["all"]), catalogue)
    args.seeds = args.seeds or list(TOY_SEEDS if args.toy else UPSTREAM_SEEDS)
    check_seeds_and_shots(args.seeds, [])
    if args.tune_seed is None:
        args.tune_seed = args.seeds[0]
    if args.tune_seed < 0:
        raise DasslLiteError(f"--tune-seed must be >= 0; got {args.tune_seed}")
    plans, grids = [], {}
    for spec in _specs(args, opts):
        points, grids[spec.cfg_label] = _grid(spec, args, catalogue.dataset_name(tasks[0]))
        plans += [plan_task(spec, t, catalogue.dataset_name(t), points, args.tune_seed)
                  for t in tasks]
    return plans, grids


def _run(jobs, args, repo_root: str) -> List[Outcome]:
    return run_with_launcher(jobs, args, repo_root) if jobs else []


def _finals(plans: Sequence[TaskPlan], tuned: Sequence[Outcome], seeds, dry_run: bool):
    """Per plan: (chosen point or None, every point's val200 top-1, its final jobs)."""
    finished = {id(o.job) for o in tuned if o.ok}
    picks = []
    for plan in plans:
        val = plan.val_accuracies(finished)
        point = select_best(val) if all(v is not None for v in val.values()) else None
        picks.append((point, val, plan.final_jobs(point, seeds) if point is not None else []))
        if point is None and dry_run:
            done = sum(v is not None for v in val.values())
            print(f"final runs of {plan.task} ({plan.spec.cfg_label}): after tuning "
                  f"({done} of {len(val)} tune runs finished)")
    return picks


def summarize_vtab(plans: Sequence[TaskPlan], picks, tuned: Sequence[Outcome],
                   finals: Sequence[Outcome], args, grids: Dict,
                   task_groups: Dict[str, str]) -> Dict:
    """Rows (configs) of task entries, group means and the overall mean; failed jobs."""
    outcomes = list(tuned) + list(finals)
    results = [read_results(o.job.output_dir) if o.ok else None for o in outcomes]
    acc = {id(o.job): (r or {}).get("accuracy") for o, r in zip(outcomes, results)}
    summary = summary_header(plans[0].spec.trainer, args.seeds, args.tune_seed, grids,
                             task_groups)
    rows: Dict[str, Dict] = {}
    for plan, (point, val, jobs) in zip(plans, picks):
        per_seed = {s: None for s in args.seeds}
        per_seed.update({j.seed: acc.get(id(j)) for j in jobs})
        row = rows.setdefault(plan.spec.cfg_label, {"config_file": plan.spec.config_file,
                                                    "tasks": {}})
        row["tasks"][plan.task] = task_entry(point, val, per_seed, task_groups[plan.task])
    groups = list(dict.fromkeys(task_groups.values()))
    summary["rows"] = {cfg: config_row(r["config_file"], r["tasks"], groups)
                       for cfg, r in rows.items()}
    summary["failed_jobs"] = [{"job": o.job.name, "output_dir": o.job.output_dir,
                               "state": o.state, "detail": o.detail}
                              for o in outcomes if not o.ok]
    summary["wall_time"] = wall_times(outcomes, results)
    return summary


def main(catalogue, argv: Optional[Sequence[str]] = None, repo_root: str = ".") -> int:
    """Run the protocol as ``tools/vtab.py`` does; ``catalogue`` is the task table
    (``datasets.vtab_tasks``)."""
    code, args, planned = prepare(argv, lambda: build_parser(repo_root),
                                  lambda a, opts: _plan(a, opts, catalogue))
    if code is not None:
        return code
    plans, grids = planned
    try:
        tuned = _run([j for p in plans for j in p.tune.values()], args, repo_root)
        picks = _finals(plans, tuned, args.seeds, args.dry_run)
        finals = _run([j for _, _, jobs in picks for j in jobs], args, repo_root)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    if args.dry_run:
        return 0
    every = {**catalogue.VTAB_TASKS, **catalogue.TOY_VTAB_TASKS}
    task_groups = {p.task: every[p.task].group for p in plans}
    summary = summarize_vtab(plans, picks, tuned, finals, args, grids, task_groups)
    stem = os.path.join(args.output_root, "vtab", f"summary_{args.trainer}")
    print(f"Summary written to {', '.join(write_vtab_summary(summary, stem))}")
    print("\n" + markdown(summary, args.table_format))
    failed = failed_outcomes(list(tuned) + list(finals))
    if failed:
        print(f"{len(failed)} jobs did not complete; their values are marked missing:")
        for line in failure_lines(failed):
            print(line)
    return 1 if failed else 0
