"""The toy world on disk: writing its datasets, and the registered dataset classes that read them.

Each toy dataset (``ToyShapes``, ``ToyTextures``, ``ToySketch``; same 64 classes, different
rendering domains, see ``datasets.toy_generator``) lives in CoOp's layout::

    <root>/<dataset_dir>/images/<class_folder>/<i>.png
    <root>/<dataset_dir>/split_zhou_<Name>.json   {"train": [[relpath, label, classname], ...], ...}
    <root>/<dataset_dir>/toy_world.json           how it was generated (version, seed, counts)

A dataset is generated in a temporary sibling folder (``.<dataset_dir>.tmp-*``), with its split
file written last, and then renamed into place, so an interrupted generation never leaves a folder
that looks complete (a killed process may leave its temporary folder behind; it can be deleted).
The dataset classes generate their folder on first use when its split file is missing.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from dassl_lite.data import SplitDataset
from dassl_lite.registry import DATASET_REGISTRY

from .toy_generator import CLASSNAMES, DOMAINS, GENERATOR_VERSION, PRETRAIN_INDEX_START, render

logger = logging.getLogger(__name__)

__all__ = ["SplitCounts", "TOY_DATASET_DIRS", "make_toy_world", "ToyShapes", "ToyTextures", "ToySketch"]

TOY_DATASET_DIRS: Dict[str, str] = {"ToyShapes": "toy_shapes", "ToyTextures": "toy_textures",
                                    "ToySketch": "toy_sketch"}
MARKER_FILE = "toy_world.json"
IMAGE_SIZE = 64


@dataclass(frozen=True)
class SplitCounts:
    """Images per class in each split; sample indices run train, then val, then test."""

    train: int = 40
    val: int = 8
    test: int = 20

    def index_ranges(self) -> Dict[str, range]:
        """The sample indices of each split: consecutive, disjoint, below PRETRAIN_INDEX_START."""
        stops = (self.train, self.train + self.val, self.train + self.val + self.test)
        starts = (0,) + stops[:2]
        return {k: range(a, b) for k, a, b in zip(("train", "val", "test"), starts, stops)}


def split_file_name(name: str) -> str:
    """Upstream split file name of dataset ``name``."""
    return f"split_zhou_{name}.json"


def class_folder(label: int) -> str:
    """Folder of class ``label`` under images/: its name with underscores ("red_circle")."""
    return CLASSNAMES[label].replace(" ", "_")


def _marker(name: str, seed: int, counts: SplitCounts) -> dict:
    return {"dataset": name, "generator_version": GENERATOR_VERSION, "seed": seed,
            "image_size": IMAGE_SIZE, "num_classes": len(CLASSNAMES), "counts": asdict(counts)}


def is_complete(dataset_dir: str, name: str, seed: int, counts: SplitCounts) -> bool:
    """Whether ``dataset_dir`` holds a finished generation of ``name`` with these parameters."""
    if not os.path.isfile(os.path.join(dataset_dir, split_file_name(name))):
        return False
    try:
        with open(os.path.join(dataset_dir, MARKER_FILE)) as f:
            return json.load(f) == _marker(name, seed, counts)
    except (OSError, ValueError):
        return False


def _write_class(job: Tuple[str, int, int, SplitCounts, str]) -> Dict[str, List[list]]:
    """Render and write every image of one class; returns its split entries."""
    name, label, seed, counts, image_dir = job
    folder = class_folder(label)
    os.makedirs(os.path.join(image_dir, folder), exist_ok=True)
    entries: Dict[str, List[list]] = {}
    for split, indices in counts.index_ranges().items():
        entries[split] = []
        for i in indices:
            relpath = f"{folder}/{i:04d}.png"
            image = render(name, label, i, seed, IMAGE_SIZE)
            image.save(os.path.join(image_dir, relpath), format="PNG", compress_level=6)
            entries[split].append([relpath, label, CLASSNAMES[label]])
    return entries


def _write_images(name: str, seed: int, counts: SplitCounts, image_dir: str,
                  workers: int) -> Dict[str, List[list]]:
    jobs = [(name, label, seed, counts, image_dir) for label in range(len(CLASSNAMES))]
    if workers > 1:
        # fork: workers only run numpy/PIL and need none of the parent's imports re-done
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            results = pool.map(_write_class, jobs, chunksize=4)
    else:
        results = [_write_class(job) for job in jobs]
    return {split: [e for r in results for e in r[split]] for split in ("train", "val", "test")}


def _write_json(path: str, obj: object) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=4, separators=(",", ": "))


def _generate(root: str, name: str, seed: int, counts: SplitCounts, force: bool,
              workers: int) -> str:
    """Generate dataset ``name`` in a temporary folder and move it to its place under ``root``."""
    final = os.path.join(root, TOY_DATASET_DIRS[name])
    if os.path.exists(final) and not force and not os.path.exists(os.path.join(final, MARKER_FILE)):
        raise FileExistsError(f"{final} exists but is not a toy world folder (no {MARKER_FILE}); "
                              f"move it away or pass force=True (--force) to replace it")
    logger.info("Generating toy dataset %s under %s (%d classes, %d/%d/%d train/val/test images "
                "per class, seed %d)", name, final, len(CLASSNAMES), counts.train, counts.val,
                counts.test, seed)
    tmp = tempfile.mkdtemp(prefix=f".{TOY_DATASET_DIRS[name]}.tmp-", dir=root)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the dataset folder should not be
    try:
        _write_json(os.path.join(tmp, MARKER_FILE), _marker(name, seed, counts))
        split = _write_images(name, seed, counts, os.path.join(tmp, "images"), workers)
        _write_json(os.path.join(tmp, split_file_name(name)), split)  # last: marks completion
        if not force and is_complete(final, name, seed, counts):  # another process was faster
            shutil.rmtree(tmp)
            return final
        if os.path.exists(final):
            why = "--force" if force else "incomplete or generated with other parameters"
            logger.warning("Replacing %s (%s)", final, why)
            shutil.rmtree(final)
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_complete(final, name, seed, counts):  # another process finished it first
            return final
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def make_toy_world(root: str, names: Optional[Iterable[str]] = None, seed: int = 0,
                   counts: SplitCounts = SplitCounts(), force: bool = False,
                   workers: int = 2) -> Dict[str, str]:
    """Write the toy datasets ``names`` (default: all) under ``root``; returns name -> folder.

    Idempotent: a dataset whose folder is complete for these parameters is skipped (unless
    ``force``); an incomplete one, or one generated with other parameters, is replaced.
    """
    names = list(DOMAINS if names is None else names)
    unknown = [n for n in names if n not in TOY_DATASET_DIRS]
    if unknown:
        raise ValueError(f"toy dataset names must be among {', '.join(TOY_DATASET_DIRS)}; "
                         f"got {unknown}")
    if sum((counts.train, counts.val, counts.test)) >= PRETRAIN_INDEX_START or counts.train < 1:
        raise ValueError(f"need train >= 1 and fewer than {PRETRAIN_INDEX_START} images per "
                         f"class; got {counts}")
    root = os.path.abspath(os.path.expanduser(root))
    os.makedirs(root, exist_ok=True)
    paths = {}
    for name in names:
        path = os.path.join(root, TOY_DATASET_DIRS[name])
        if not force and is_complete(path, name, seed, counts):
            logger.info("Toy dataset %s is up to date in %s", name, path)
        else:
            path = _generate(root, name, seed, counts, force, workers)
        paths[name] = path
    return paths


class _ToyDataset(SplitDataset):
    """A toy dataset in CoOp's layout, generated on first use (seed 0, ``counts`` per class)."""

    image_dir = "images"
    num_classes_expected = len(CLASSNAMES)
    instructions = ("generated automatically on first use; or run "
                    "`python tools/make_toy_data.py --root DATA`")
    counts = SplitCounts()  # images per class written on first use

    def __init__(self, cfg) -> None:
        name = type(self).__name__
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        if not os.path.isfile(os.path.join(root, self.dataset_dir, self.split_file)):
            logger.info("Toy dataset %s not found under %s: generating it (first use)", name, root)
            make_toy_world(root, [name], counts=self.counts, workers=min(2, os.cpu_count() or 1))
        super().__init__(cfg)


@DATASET_REGISTRY.register()
class ToyShapes(_ToyDataset):
    """Flat filled colour x shape images on plain or gradient muted backgrounds."""

    dataset_dir = TOY_DATASET_DIRS["ToyShapes"]
    split_file = split_file_name("ToyShapes")


@DATASET_REGISTRY.register()
class ToyTextures(_ToyDataset):
    """Colour x shape images with striped, checked or dotted fills on busy backgrounds."""

    dataset_dir = TOY_DATASET_DIRS["ToyTextures"]
    split_file = split_file_name("ToyTextures")


@DATASET_REGISTRY.register()
class ToySketch(_ToyDataset):
    """Colour x shape outlines: a wobbly pencil stroke in the class colour on grey paper."""

    dataset_dir = TOY_DATASET_DIRS["ToySketch"]
    split_file = split_file_name("ToySketch")
