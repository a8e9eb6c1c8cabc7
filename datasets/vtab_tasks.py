"""VTAB-1k's tasks: names, groups and class counts (the contract between the datasets, the
protocol (``tools/vtab.py``) and the docs).

Task names are the folder names of the prepared VTAB-1k release that NOAH, SSF, FacT and most
later parameter-efficient papers share::

    <DATASET.ROOT>/vtab-1k/<task>/{train800,val200,train800val200,test}.txt   "<relpath> <label>"
    <DATASET.ROOT>/vtab-1k/<task>/<relpath>                                     the images

Each task is the registered dataset ``dataset_name(task)`` (``VTAB1k_cifar`` ...).
``DATASET.VTAB.MODE`` picks the lists: ``final`` (default; train on ``train800val200``, test on
``test``) or ``tune`` (train on ``train800``, test on ``val200``), the VPT paper's protocol.

The toy world has three VTAB-style tasks (one per group) in the same layout under
``<DATASET.ROOT>/vtab-1k-toy/<task>/``, generated on first use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

GROUPS: Tuple[str, ...] = ("Natural", "Specialized", "Structured")
MODES: Tuple[str, ...] = ("final", "tune")
# (train list, test list) of each DATASET.VTAB.MODE
MODE_LISTS: Dict[str, Tuple[str, str]] = {"final": ("train800val200", "test"),
                                          "tune": ("train800", "val200")}
LIST_FILES: Tuple[str, ...] = ("train800", "val200", "train800val200", "test")
DATASET_PREFIX = "VTAB1k_"
FOLDER = "vtab-1k"
TOY_FOLDER = "vtab-1k-toy"


@dataclass(frozen=True)
class VTabTask:
    name: str  # folder name under vtab-1k/
    group: str  # one of GROUPS
    num_classes: int


def _tasks(rows) -> Dict[str, VTabTask]:
    return {name: VTabTask(name, group, n) for name, group, n in rows}


# The 19 tasks in the VPT paper's table order.
VTAB_TASKS: Dict[str, VTabTask] = _tasks([
    ("cifar", "Natural", 100),
    ("caltech101", "Natural", 102),
    ("dtd", "Natural", 47),
    ("oxford_flowers102", "Natural", 102),
    ("oxford_iiit_pet", "Natural", 37),
    ("svhn", "Natural", 10),
    ("sun397", "Natural", 397),
    ("patch_camelyon", "Specialized", 2),
    ("eurosat", "Specialized", 10),
    ("resisc45", "Specialized", 45),
    ("diabetic_retinopathy", "Specialized", 5),
    ("clevr_count", "Structured", 8),
    ("clevr_dist", "Structured", 6),
    ("dmlab", "Structured", 6),
    ("kitti", "Structured", 4),
    ("dsprites_loc", "Structured", 16),
    ("dsprites_ori", "Structured", 16),
    ("smallnorb_azi", "Structured", 18),
    ("smallnorb_ele", "Structured", 9),
])

# The toy world's VTAB-style tasks (one per group): the object's colour (8 classes, photo
# domain), its shape (8 classes, texture domain) and where it sits (structured, sketch domain).
TOY_VTAB_TASKS: Dict[str, VTabTask] = _tasks([
    ("toy_colour", "Natural", 8),
    ("toy_shape", "Specialized", 8),
    ("toy_position", "Structured", 4),
])


def dataset_name(task: str) -> str:
    """Registered dataset name of ``task`` (``cifar`` -> ``VTAB1k_cifar``)."""
    return DATASET_PREFIX + task


def tasks_of_group(group: str, toy: bool = False) -> List[str]:
    table = TOY_VTAB_TASKS if toy else VTAB_TASKS
    return [t.name for t in table.values() if t.group == group]
