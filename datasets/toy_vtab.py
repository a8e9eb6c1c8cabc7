"""The toy world's VTAB-style tasks on disk, in the prepared VTAB-1k layout.

Three tasks, one per VTAB group (``datasets.vtab_tasks.TOY_VTAB_TASKS``), rendered by
``datasets.toy_generator`` at 64 px:

- ``toy_colour`` (Natural): the object's colour (8 classes), ToyShapes' photo domain; the shape
  cycles through all 8 shapes within each colour.
- ``toy_shape`` (Specialized): the object's shape (8 classes), ToyTextures' texture domain; the
  colour cycles through all 8 colours within each shape.
- ``toy_position`` (Structured): where the object sits, the quadrant of its bounding box's centre
  (4 classes: top left, top right, bottom left, bottom right), ToySketch's sketch domain; the
  64 colour x shape classes cycle, and a sample whose centre lies within ``size / 16`` pixels of
  a midline is skipped (which quadrant it is in would be a matter of a pixel).

Every task has :data:`TOY_SPLIT_SIZES` images: 128 in ``train800.txt``, 32 in ``val200.txt``
(balanced over the classes) and 128 in ``test.txt``; ``train800val200.txt`` is ``train800``
followed by ``val200`` (the file names are VTAB-1k's, the counts the toy's). Sample indices start
at :data:`VTAB_INDEX_START` (above any toy-world split index in use, below
``PRETRAIN_INDEX_START``, so neither the toy-world datasets nor pretraining ever render one of
these images)::

    <root>/vtab-1k-toy/<task>/images/<j>.png
    <root>/vtab-1k-toy/<task>/{train800,val200,train800val200,test}.txt   "images/<j>.png <label>"
    <root>/vtab-1k-toy/<task>/toy_vtab.json                               how it was generated

A task is written in a temporary sibling folder, the list files last, then renamed into place,
so an interrupted generation never leaves a folder that looks complete.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from .toy_generator import (CLASSNAMES, COLOURS, GENERATOR_VERSION, PRETRAIN_INDEX_START, SHAPES,
                            render_with_box)
from .vtab_tasks import LIST_FILES, TOY_FOLDER, TOY_VTAB_TASKS

logger = logging.getLogger(__name__)

__all__ = ["TOY_CLASSNAMES", "TOY_SPLIT_SIZES", "VTAB_INDEX_START", "make_toy_vtab",
           "toy_task_complete"]

VTAB_INDEX_START = 500_000  # toy-world splits stay far below, pretraining starts at 1_000_000
assert VTAB_INDEX_START < PRETRAIN_INDEX_START
TOY_VTAB_VERSION = 1  # bump when the sampling below changes (the marker then differs)
IMAGE_SIZE = 64
MARKER_FILE = "toy_vtab.json"
# images in each list of every toy task (balanced over the task's classes)
TOY_SPLIT_SIZES: Dict[str, int] = {"train800": 128, "val200": 32, "test": 128}
_DOMAINS = {"toy_colour": "ToyShapes", "toy_shape": "ToyTextures", "toy_position": "ToySketch"}
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
TOY_CLASSNAMES: Dict[str, List[str]] = {"toy_colour": list(COLOURS), "toy_shape": list(SHAPES),
                                        "toy_position": list(POSITIONS)}
assert all(len(TOY_CLASSNAMES[t]) == TOY_VTAB_TASKS[t].num_classes for t in TOY_VTAB_TASKS)


def _toy_label(colour: int, shape: int) -> int:
    """The toy world's 64-class label of a colour and a shape (by index)."""
    return CLASSNAMES.index(f"{list(COLOURS)[colour]} {SHAPES[shape]}")


def _position(box: Tuple[float, float, float, float], size: int) -> Optional[int]:
    """Quadrant (index into POSITIONS) of the box centre; None within size/16 of a midline."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half, dead = size / 2, size / 16
    if abs(cx - half) < dead or abs(cy - half) < dead:
        return None
    return 2 * int(cy > half) + int(cx > half)


def _samples(task: str, seed: int) -> Iterator[Tuple[int, int, object]]:
    """(j, task label, image) for j = 0, 1, ...: the task's candidate images in order."""
    domain, n = _DOMAINS[task], TOY_VTAB_TASKS[task].num_classes
    j = 0
    while True:
        if task == "toy_position":
            toy_label = j % len(CLASSNAMES)
        else:  # the label varies fastest, the other attribute cycles within it
            label, other = j % n, (j // n) % n
            toy_label = _toy_label(label, other) if task == "toy_colour" else _toy_label(other, label)
        image, box = render_with_box(domain, toy_label, VTAB_INDEX_START + j, seed, IMAGE_SIZE)
        if task == "toy_position":
            label = _position(box, IMAGE_SIZE)
        if label is not None:
            yield j, label, image
        j += 1


def _write_task(task: str, seed: int, folder: str) -> None:
    """Images under ``folder/images`` and the four list files (written last)."""
    n = TOY_VTAB_TASKS[task].num_classes
    os.makedirs(os.path.join(folder, "images"))
    stream = _samples(task, seed)
    lists: Dict[str, List[str]] = {}
    for split, total in TOY_SPLIT_SIZES.items():
        want = [total // n] * n
        lines = lists[split] = []
        while any(want):
            j, label, image = next(stream)
            if not want[label]:
                continue
            want[label] -= 1
            relpath = f"images/{j:05d}.png"
            image.save(os.path.join(folder, relpath), format="PNG", compress_level=6)
            lines.append(f"{relpath} {label}\n")
    lists["train800val200"] = lists["train800"] + lists["val200"]
    for name in LIST_FILES:
        with open(os.path.join(folder, f"{name}.txt"), "w") as f:
            f.writelines(lists[name])


def _marker(task: str, seed: int) -> dict:
    return {"task": task, "toy_vtab_version": TOY_VTAB_VERSION,
            "generator_version": GENERATOR_VERSION, "seed": seed, "image_size": IMAGE_SIZE,
            "index_start": VTAB_INDEX_START, "sizes": TOY_SPLIT_SIZES}


def toy_task_complete(folder: str, task: str, seed: int = 0) -> bool:
    """Whether ``folder`` holds a finished generation of ``task`` with these parameters."""
    if not all(os.path.isfile(os.path.join(folder, f"{n}.txt")) for n in LIST_FILES):
        return False
    try:
        with open(os.path.join(folder, MARKER_FILE)) as f:
            return json.load(f) == _marker(task, seed)
    except (OSError, ValueError):
        return False


def _generate(parent: str, task: str, seed: int) -> str:
    final = os.path.join(parent, task)
    if os.path.exists(final) and not os.path.exists(os.path.join(final, MARKER_FILE)):
        raise FileExistsError(f"{final} exists but is not a toy VTAB task folder (no "
                              f"{MARKER_FILE}); move it away")
    logger.info("Generating the toy VTAB task %s in %s (seed %d)", task, final, seed)
    tmp = tempfile.mkdtemp(prefix=f".{task}.tmp-", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the dataset folder should not be
    try:
        with open(os.path.join(tmp, MARKER_FILE), "w") as f:
            json.dump(_marker(task, seed), f, indent=1)
        _write_task(task, seed, tmp)
        if toy_task_complete(final, task, seed):  # another process was faster
            shutil.rmtree(tmp)
            return final
        if os.path.exists(final):
            logger.warning("Replacing %s (incomplete or generated with other parameters)", final)
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if toy_task_complete(final, task, seed):  # another process finished it first
            return final
        raise
    return final


def make_toy_vtab(root: str, tasks: Optional[Iterable[str]] = None,
                  seed: int = 0) -> Dict[str, str]:
    """Write the toy VTAB tasks ``tasks`` (default: all three) under ``root/vtab-1k-toy``;
    returns task -> folder. A task already complete for ``seed`` is left as it is."""
    tasks = list(TOY_VTAB_TASKS if tasks is None else tasks)
    unknown = [t for t in tasks if t not in TOY_VTAB_TASKS]
    if unknown:
        raise ValueError(f"toy VTAB tasks are {', '.join(TOY_VTAB_TASKS)}; got {unknown}")
    parent = os.path.join(os.path.abspath(os.path.expanduser(root)), TOY_FOLDER)
    os.makedirs(parent, exist_ok=True)
    out = {}
    for task in tasks:
        folder = os.path.join(parent, task)
        out[task] = folder if toy_task_complete(folder, task, seed) else _generate(
            parent, task, seed)
    return out
