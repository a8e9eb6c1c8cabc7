"""The VPT paper's VTAB-1k protocol (``tools/vtab.py``; KMnP/vpt ``tune_vtab.py``): tasks, the
learning-rate x weight-decay grid, the jobs and the choice of the best grid point.

Per task and trainer config:

1. tune: train on ``train800``, test on ``val200`` (``DATASET.VTAB.MODE tune``) at every point
   of the grid, with one seed (``--tune-seed``; upstream leaves tuning runs unseeded);
2. select (:func:`select_best`): the point with the best val200 top-1; a tie goes to the
   smallest learning rate (KMnP/vpt ``find_best_lrwd``: "get the smallest lr to break tie for
   stability"), then to the largest weight decay (ours: upstream keeps whichever run ``glob``
   lists first);
3. final: train on ``train800val200`` at that point and test on ``test`` (``DATASET.VTAB.MODE
   final``), once per seed (upstream: 5 runs, seeds 42 44 82 100 800).

Layout::

    <out>/vtab/<task>/<T>/<cfg>/tune/lr<lr>_wd<wd>            (the tune seed)
    <out>/vtab/<task>/<T>/<cfg>/final/lr<lr>_wd<wd>/seed<S>

Grid values are KMnP/vpt's learning rates per 256 images: a run's ``OPTIM.LR`` is
``lr * DATALOADER.TRAIN_X.BATCH_SIZE / 256`` (``tune_vtab.py`` ``setup``: "update lr based on
the batchsize"; ``--lr-scale none`` turns this off); folder names carry the grid value. Every
run tests its last epoch (``TEST.FINAL_MODEL last_step``): val200 is part of the final training
set, so it cannot pick a checkpoint.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import DasslLiteError
from .jobs import Job, read_results
from .plans import RunSpec, make_job
from .resolve import DatasetConfig

# KMnP/vpt tune_vtab.py get_lrwd_range(): learning rates (per 256 images) and weight decays per
# MODEL.TRANSFER_TYPE ("finetune" there is TRANSFER_TYPE end2end, configs/base-finetune.yaml).
PAPER_WD = (0.01, 0.001, 0.0001, 0.0)
PAPER_GRIDS: Dict[str, Tuple[Tuple[float, ...], Tuple[float, ...]]] = {
    "prompt": ((5.0, 2.5, 1.0, 50.0, 25.0, 10.0, 0.5, 0.25, 0.1, 0.05), PAPER_WD),
    "linear": ((50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05), PAPER_WD),
    "end2end": ((0.001, 0.0001, 0.0005, 0.005), PAPER_WD),
}
GRID_SOURCE = "KMnP/vpt tune_vtab.py get_lrwd_range()"
LR_SCALES = ("batch", "none")
# Keys the protocol sets on every run (the tool's flags set them).
VTAB_RESERVED = {"DATASET.VTAB.MODE": "tune, then final", "OPTIM.LR": "--lr",
                 "OPTIM.WEIGHT_DECAY": "--wd", "TEST.FINAL_MODEL": "last_step"}


def resolve_tasks(names: Sequence[str], catalogue) -> List[str]:
    """Task names of ``names`` in the catalogue's order: ``all`` (the 19 tasks), a group
    (``natural``, ``specialized``, ``structured``), ``toy`` (the toy tasks) or a task name.
    ``catalogue``: a module like ``datasets.vtab_tasks``."""
    real, toy = list(catalogue.VTAB_TASKS), list(catalogue.TOY_VTAB_TASKS)
    groups = {g.lower(): g for g in catalogue.GROUPS}
    chosen = set()
    for name in names:
        if name == "all":
            chosen.update(real)
        elif name == "toy":
            chosen.update(toy)
        elif name.lower() in groups:
            chosen.update(catalogue.tasks_of_group(groups[name.lower()]))
        elif name in real or name in toy:
            chosen.add(name)
        else:
            words = ["all", *groups, "toy", *real, *toy]
            close = difflib.get_close_matches(name, words, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise DasslLiteError(f"--tasks: unknown VTAB-1k task {name!r}; expected all, "
                                 f"{', '.join(groups)}, toy or a task name "
                                 f"({', '.join(real + toy)}).{hint}")
    return [t for t in real + toy if t in chosen]


@dataclass(frozen=True)
class GridPoint:
    """One learning rate (per 256 images, as the grid lists it) and weight decay, and the
    ``OPTIM.LR`` a run uses (``lr`` scaled by the batch size)."""

    lr: float
    wd: float
    optim_lr: float

    @property
    def label(self) -> str:
        return f"lr{self.lr:g}_wd{self.wd:g}"


def check_axis(values: Sequence[float], flag: str, positive: bool) -> None:
    """Raise naming ``flag``: an empty list, a value listed twice, lr <= 0 or wd < 0."""
    if not values:
        raise DasslLiteError(f"{flag} needs at least one value")
    bad = [v for v in values if (v <= 0 if positive else v < 0)]
    if bad:
        need = "> 0" if positive else ">= 0"
        raise DasslLiteError(f"{flag} values must be {need}; got {' '.join(f'{v:g}' for v in bad)}")
    twice = sorted({v for v in values if list(values).count(v) > 1})
    if twice:
        raise DasslLiteError(f"{flag} lists {' '.join(f'{v:g}' for v in twice)} more than once")


def grid_axes(transfer_type: Optional[str], lrs: Optional[Sequence[float]],
              wds: Optional[Sequence[float]], what: str, grids: Optional[Dict] = None,
              grid_source: str = GRID_SOURCE) -> Tuple[List[float], List[float], str]:
    """(learning rates, weight decays, where they come from): ``--lr`` / ``--wd`` where given,
    else the grid of ``transfer_type`` (MODEL.TRANSFER_TYPE of ``what``) in ``grids`` (default
    the paper's, :data:`PAPER_GRIDS`)."""
    grids = PAPER_GRIDS if grids is None else grids
    paper = grids.get(transfer_type or "")
    if paper is None and (lrs is None or wds is None):
        kind = (f"MODEL.TRANSFER_TYPE {transfer_type!r}" if transfer_type
                else "no MODEL.TRANSFER_TYPE it reads")
        raise DasslLiteError(f"No grid for {what}: it has {kind} (grids of {grid_source}: "
                             f"{', '.join(grids)}); pass --lr and --wd")
    lr_axis = list(lrs) if lrs is not None else list(paper[0])
    wd_axis = list(wds) if wds is not None else list(paper[1])
    check_axis(lr_axis, "--lr", positive=True)
    check_axis(wd_axis, "--wd", positive=False)
    given = [f for f, v in (("--lr", lrs), ("--wd", wds)) if v is not None]
    source = (f"{' and '.join(given)} flags" if len(given) == 2 else
              f"{grid_source} ({transfer_type})" + (f", {given[0]} flag" if given else ""))
    return lr_axis, wd_axis, source


def grid_points(lrs: Sequence[float], wds: Sequence[float], scale: float) -> List[GridPoint]:
    """Every (lr, wd), in upstream's tuning order: lr descending, then wd descending."""
    return [GridPoint(lr, wd, lr * scale) for lr in sorted(lrs, reverse=True)
            for wd in sorted(wds, reverse=True)]


def select_best(val: Dict[GridPoint, float]) -> GridPoint:
    """The point with the highest val200 top-1; ties: the smallest lr, then the largest wd."""
    if not val:
        raise ValueError("select_best needs at least one tuned point")
    return max(val, key=lambda p: (val[p], -p.lr, p.wd))


def vtab_dir(spec: RunSpec, task: str, *parts: str) -> str:
    return os.path.join(spec.output_root, "vtab", task, spec.trainer, spec.cfg_label, *parts)


def point_opts(point: GridPoint, mode: str) -> List[str]:
    return ["DATASET.VTAB.MODE", mode, "OPTIM.LR", str(point.optim_lr),
            "OPTIM.WEIGHT_DECAY", str(point.wd), "TEST.FINAL_MODEL", "last_step"]


@dataclass
class TaskPlan:
    """The tune jobs of one task and config, and (after tuning) its final jobs."""

    spec: RunSpec
    task: str
    dataset: DatasetConfig
    tune_seed: int
    tune: Dict[GridPoint, Job]

    def final_jobs(self, point: GridPoint, seeds: Sequence[int]) -> List[Job]:
        """One ``train800val200`` -> ``test`` run per seed at ``point``."""
        kind = f"final {self.spec.cfg_label} {point.label}"
        return [make_job(self.spec, kind, self.dataset, s, 0,
                         vtab_dir(self.spec, self.task, "final", point.label, f"seed{s}"),
                         point_opts(point, "final")) for s in seeds]

    def val_accuracies(self, finished_ids) -> Dict[GridPoint, Optional[float]]:
        """val200 top-1 of each point (None where its run did not finish)."""
        return {p: ((read_results(j.output_dir) or {}).get("accuracy")
                    if id(j) in finished_ids else None) for p, j in self.tune.items()}


def plan_task(spec: RunSpec, task: str, dataset_name: str, points: Sequence[GridPoint],
              tune_seed: int) -> TaskPlan:
    """The tune jobs of ``task`` (``dataset_name`` registered) over ``points``."""
    dataset = DatasetConfig(task, "", dataset_name)
    tune = {p: make_job(spec, f"tune {spec.cfg_label} {p.label}", dataset, tune_seed, 0,
                        vtab_dir(spec, task, "tune", p.label), point_opts(p, "tune"))
            for p in points}
    return TaskPlan(spec, task, dataset, tune_seed, tune)


def check_opts(opts: Sequence[str]) -> None:
    """Raise when a trailing option sets a key the protocol sets itself."""
    for key in list(opts)[::2]:
        if key in VTAB_RESERVED:
            raise DasslLiteError(f"{key} is set by the VTAB protocol ({VTAB_RESERVED[key]})")
