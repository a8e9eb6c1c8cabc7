"""The VTAB-1k summary and table: per config, each task's test top-1 (mean ± population std over
the final seeds), the chosen learning rate / weight decay and their val200 top-1, the group means
(mean of the group's tasks) and the mean of the group means (the VPT paper reports the groups);
and the paper's published numbers as the reference for real runs."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

from ..utils.io import atomic_write_json, atomic_write_text
from . import report
from .stats import STD_CONVENTION, mean_or_none, seed_stat

# The VPT paper (Jia et al., ECCV 2022, arXiv 2203.12119), ViT-B/16 supervised on ImageNet-21k,
# VTAB-1k test top-1 per task (its per-task appendix table, as reproduced in the READMEs of
# V-PETL Bench and Convpass) in the paper's task order; the group means of Table 1.
PAPER_SOURCE = ("VPT paper (Jia et al., ECCV 2022), ViT-B/16 ImageNet-21k: per-task appendix "
                "table (as reproduced by V-PETL Bench and Convpass), group means of Table 1")
PAPER_TASKS = ("cifar", "caltech101", "dtd", "oxford_flowers102", "oxford_iiit_pet", "svhn",
               "sun397", "patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy",
               "clevr_count", "clevr_dist", "dmlab", "kitti", "dsprites_loc", "dsprites_ori",
               "smallnorb_azi", "smallnorb_ele")
PAPER_PER_TASK: Dict[str, tuple] = {
    "Full": (68.9, 87.7, 64.3, 97.2, 86.9, 87.4, 38.8, 79.7, 95.7, 84.2, 73.9,
             56.3, 58.6, 41.7, 65.5, 57.5, 46.7, 25.7, 29.1),
    "Linear": (63.4, 85.0, 63.2, 97.0, 86.3, 36.6, 51.0, 78.5, 87.5, 68.6, 74.0,
               34.3, 30.6, 33.2, 55.4, 12.5, 20.0, 9.6, 19.2),
    "VPT-shallow": (77.7, 86.9, 62.6, 97.5, 87.3, 74.5, 51.2, 78.2, 92.0, 75.6, 72.9,
                    50.5, 58.6, 40.5, 67.1, 68.7, 36.1, 20.2, 34.1),
    "VPT-deep": (78.8, 90.8, 65.8, 98.0, 88.3, 78.1, 49.6, 81.8, 96.1, 83.4, 68.4,
                 68.5, 60.0, 46.5, 72.8, 73.6, 47.9, 32.9, 37.8),
}
PAPER_GROUP_MEANS: Dict[str, Dict[str, float]] = {
    "Full": {"Natural": 75.88, "Specialized": 83.36, "Structured": 47.64},
    "Linear": {"Natural": 68.93, "Specialized": 77.16, "Structured": 26.84},
    "VPT-shallow": {"Natural": 76.81, "Specialized": 79.66, "Structured": 46.98},
    "VPT-deep": {"Natural": 78.48, "Specialized": 82.43, "Structured": 54.98},
}


def task_entry(point, val: Dict, per_seed: Dict[int, Optional[float]], group: str) -> Dict:
    """One task of one config: the chosen point (None when tuning did not finish), every
    point's val200 top-1 and the final runs' statistic."""
    entry = {"group": group, "lr": None, "wd": None, "optim_lr": None, "val_top1": None,
             "tune": {p.label: v for p, v in val.items()}}
    if point is not None:
        entry.update(lr=point.lr, wd=point.wd, optim_lr=point.optim_lr, val_top1=val[point])
    entry.update(seed_stat(per_seed))
    return entry


def group_means(tasks: Dict[str, Dict], groups: Sequence[str]) -> Dict[str, Optional[float]]:
    """Mean of each group's task means (groups without a task are left out)."""
    out = {}
    for g in groups:
        means = [e["mean"] for e in tasks.values() if e["group"] == g]
        if means:
            out[g] = mean_or_none(means)
    return out


def config_row(config_file: str, tasks: Dict[str, Dict], groups: Sequence[str]) -> Dict:
    """A table row: its tasks, group means and the mean of the group means."""
    per_group = group_means(tasks, groups)
    return {"config_file": config_file, "tasks": tasks, "groups": per_group,
            "mean": mean_or_none(list(per_group.values()))}


def summary_header(trainer: str, seeds: Sequence[int], tune_seed: int, grids: Dict,
                   task_groups: Dict[str, str]) -> Dict:
    return {"protocol": "vtab", "trainer": trainer, "metric": "accuracy (top-1, %)",
            "seeds": list(seeds), "tune_seed": tune_seed, "std_convention": STD_CONVENTION,
            "tasks": dict(task_groups), "grids": grids,
            "selection": "best val200 top-1; ties: smallest lr, then largest wd"}


def _cell(entry: Dict, n_seeds: int) -> str:
    """``mean`` for one seed, ``mean ± std`` for more, or which seeds are missing."""
    one = n_seeds == 1 and entry["mean"] is not None
    return report.fmt_mean(entry["mean"]) if one else report.fmt_stat(entry)


def _group_names(summary: Dict) -> List[str]:
    seen = []
    for row in summary["rows"].values():
        seen += [g for g in row["groups"] if g not in seen]
    return seen


def results_table(summary: Dict, fmt: str = "github") -> str:
    """Config | each task | each group mean | mean of the group means."""
    tasks, groups = list(summary["tasks"]), _group_names(summary)
    n = len(summary["seeds"])
    rows = [[cfg, *(_cell(row["tasks"][t], n) for t in tasks),
             *(report.fmt_mean(row["groups"].get(g)) for g in groups), report.fmt_mean(row["mean"])]
            for cfg, row in summary["rows"].items()]
    mean = f"Mean ({len(groups)} group{'' if len(groups) == 1 else 's'})"
    return report.render(["Config", *tasks, *groups, mean], rows, fmt)


def choice_table(summary: Dict, fmt: str = "github") -> str:
    """Config | each task's chosen lr / wd (grid values) and its val200 top-1."""
    def cell(e):
        if e["lr"] is None:
            return "n/a (tuning incomplete)"
        return f"{e['lr']:g} / {e['wd']:g} ({report.fmt_mean(e['val_top1'])})"

    rows = [[cfg, *(cell(row["tasks"][t]) for t in summary["tasks"])]
            for cfg, row in summary["rows"].items()]
    return report.render(["Config", *summary["tasks"]], rows, fmt)


def reference_table(tasks: Sequence[str], fmt: str = "github") -> str:
    """The paper's numbers for ``tasks`` (those it reports) and its group means."""
    shown = [t for t in tasks if t in PAPER_TASKS]
    groups = list(PAPER_GROUP_MEANS["Full"])
    rows = [[method, *(f"{vals[PAPER_TASKS.index(t)]:.1f}" for t in shown),
             *(f"{PAPER_GROUP_MEANS[method][g]:.2f}" for g in groups),
             f"{sum(PAPER_GROUP_MEANS[method].values()) / len(groups):.2f}"]
            for method, vals in PAPER_PER_TASK.items()]
    return report.render(["Method", *shown, *groups, "Mean (3 groups)"], rows, fmt)


def caption(summary: Dict) -> str:
    seeds = " ".join(map(str, summary["seeds"]))
    spread = "mean ± population std over seeds" if len(summary["seeds"]) > 1 else "one seed"
    return (f"VTAB-1k protocol, {summary['trainer']}: test top-1 (%) after training on "
            f"train800val200 at the lr / wd with the best val200 top-1 (tune seed "
            f"{summary['tune_seed']}); final seeds {seeds}, {spread}")


def markdown(summary: Dict, fmt: str = "github") -> str:
    """The tables of a summary (and the paper's reference for the real tasks it ran)."""
    text = (f"{caption(summary)}\n\n{results_table(summary, fmt)}\n\nChosen lr / wd (grid "
            f"values, per 256 images) and val200 top-1\n\n{choice_table(summary, fmt)}\n")
    if any(t in PAPER_TASKS for t in summary["tasks"]):
        text += f"\nReference: {PAPER_SOURCE}\n\n{reference_table(summary['tasks'], fmt)}\n"
    return text


def csv_rows(summary: Dict) -> List[Dict]:
    """One row per config and task, then one per config and group mean, and the overall mean."""
    rows = []
    for cfg, row in summary["rows"].items():
        for task, e in row["tasks"].items():
            keys = {k: e[k] for k in ("group", "lr", "wd", "optim_lr", "val_top1")}
            rows.append(report._stat_row(e, config=cfg, task=task, **keys))
        rows += [{"config": cfg, "task": f"{g} mean", "group": g, "mean": m}
                 for g, m in row["groups"].items()]
        rows.append({"config": cfg, "task": "mean of group means", "mean": row["mean"]})
    return rows


def write_vtab_summary(summary: Dict, stem: str) -> List[str]:
    """``<stem>.json``, ``<stem>.csv`` and ``<stem>.md``; returns the paths."""
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    atomic_write_json(stem + ".json", summary)
    atomic_write_text(stem + ".csv", report.to_csv(csv_rows(summary)))
    atomic_write_text(stem + ".md", markdown(summary))
    return [stem + ".json", stem + ".csv", stem + ".md"]
