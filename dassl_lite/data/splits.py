"""Split files and split helpers with upstream CoOp/Dassl semantics.

``DatasetBase`` exposes these functions as static methods under their upstream names, so ported
dataset classes keep calling ``self.read_split(...)`` or ``OxfordPets.save_split(...)``.

Randomness: every function that samples takes ``seed``: an int (a private ``random.Random(seed)``),
a ``random.Random`` (its stream continues, so train and val drawn one after the other reproduce
upstream's single global stream), or None (the global ``random`` module, as upstream does).
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
from collections import defaultdict
from pathlib import PurePath
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..utils.io import atomic_write_text
from .datum import Datum
from .errors import SplitFileError

logger = logging.getLogger(__name__)

Seed = Union[int, random.Random, None]
SUBSAMPLE_CHOICES = ("all", "base", "new")


def make_rng(seed: Seed):
    """A ``random.Random`` for ``seed`` (see the module docstring); None gives the global one."""
    if seed is None:
        return random
    if isinstance(seed, random.Random):
        return seed
    return random.Random(seed)


# ------------------------------------------------------------------ split files
def items_to_json(items: Sequence[Datum], path_prefix: str) -> List[list]:
    """``[[relpath, label, classname], ...]`` with paths relative to ``path_prefix`` ('/'-separated)."""
    prefix = os.path.abspath(path_prefix)
    out = []
    for item in items:
        rel = os.path.relpath(os.path.abspath(item.impath), prefix)
        if rel == ".." or rel.startswith(".." + os.sep):
            raise ValueError(
                f"Image path {item.impath!r} is not inside the path prefix {path_prefix!r}; "
                "split files store paths relative to it"
            )
        out.append([PurePath(rel).as_posix(), item.label, item.classname])
    return out


def _check_row(row: Any, index: int, where: str) -> None:
    """One split entry must be ``[relpath, label, classname]`` (str, int, str)."""
    expected = "expected [relative image path, integer label, class name]"
    if not isinstance(row, (list, tuple)):
        raise SplitFileError(
            f"{where}, entry {index}: {row!r} is a {type(row).__name__}; {expected}")
    if len(row) != 3:
        raise SplitFileError(
            f"{where}, entry {index}: {list(row)!r} has {len(row)} fields; {expected}")
    rel, label, classname = row
    if not isinstance(rel, str) or not isinstance(classname, str) or isinstance(label, bool) \
            or not isinstance(label, int) or label < 0:
        raise SplitFileError(f"{where}, entry {index}: {list(row)!r}; {expected} (label >= 0)")


def items_from_json(rows: Sequence[Sequence], path_prefix: str,
                    where: str = "split") -> List[Datum]:
    """Inverse of :func:`items_to_json`: join each relative path to ``path_prefix``.

    A malformed entry raises :class:`SplitFileError` naming ``where`` and the entry."""
    if not isinstance(rows, (list, tuple)):
        raise SplitFileError(f"{where} must be a list of [path, label, classname] entries; "
                             f"got a {type(rows).__name__}")
    for i, row in enumerate(rows):
        _check_row(row, i, where)
    return [
        Datum(impath=os.path.join(path_prefix, rel), label=int(label), classname=classname)
        for rel, label, classname in rows
    ]


def load_json_file(filepath: str, what: str = "split file") -> Any:
    """The JSON in ``filepath``; an empty or malformed file raises :class:`SplitFileError`
    naming the file (and the line and column of a syntax error)."""
    with open(filepath, "r") as f:
        text = f.read()
    if not text.strip():
        raise SplitFileError(f"The {what} {filepath} is empty; restore or re-download it")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SplitFileError(f"The {what} {filepath} is not valid JSON (line {e.lineno}, column "
                             f"{e.colno}: {e.msg}); restore or re-download it") from None


def write_json(obj: dict, filepath: str) -> None:
    """Write ``obj`` as upstream's ``write_json`` does (indent 4), atomically."""
    atomic_write_text(filepath, json.dumps(obj, indent=4, separators=(",", ": ")))


def read_split(filepath: str, path_prefix: str) -> Tuple[List[Datum], List[Datum], List[Datum]]:
    """Read an upstream split file (``split_zhou_<Name>.json``) into (train, val, test)."""
    logger.info("Reading split from %s", filepath)
    split = load_json_file(filepath)
    if not isinstance(split, dict):
        raise SplitFileError(f"Split file {filepath} must hold an object with keys train, val, "
                             f"test; got a {type(split).__name__}")
    missing = [k for k in ("train", "val", "test") if k not in split]
    if missing:
        raise SplitFileError(
            f"Split file {filepath} must have keys train, val, test; missing {', '.join(missing)}"
        )
    train, val, test = (items_from_json(split[k], path_prefix, f"Split file {filepath}, '{k}'")
                        for k in ("train", "val", "test"))
    warn_split_overlap(filepath, {"train": split["train"], "val": split["val"],
                                  "test": split["test"]})
    return train, val, test


def warn_split_overlap(filepath: str, parts: Dict[str, Sequence[Sequence]]) -> None:
    """Warn when an image path is listed in test and in train or val (a leak that inflates
    test accuracy); the split is still read as written, as upstream reads it."""
    test_paths = {row[0] for row in parts["test"]}
    for name in ("train", "val"):
        shared = sorted({row[0] for row in parts[name]} & test_paths)
        if shared:
            logger.warning("Split file %s lists %d image(s) in both '%s' and 'test' (first: %s); "
                           "test accuracy on this split is not held-out", filepath, len(shared),
                           name, shared[0])


def save_split(
    train: Sequence[Datum], val: Sequence[Datum], test: Sequence[Datum], filepath: str, path_prefix: str
) -> None:
    """Write (train, val, test) in the upstream split format, paths relative to ``path_prefix``."""
    split = {name: items_to_json(items, path_prefix) for name, items in
             (("train", train), ("val", val), ("test", test))}
    write_json(split, filepath)
    logger.info("Saved split to %s", filepath)


# ------------------------------------------------------------------ grouping
def split_dataset_by_label(data_source: Sequence[Datum]) -> Dict[int, List[Datum]]:
    """Group items by label (insertion order of first appearance)."""
    output: Dict[int, List[Datum]] = defaultdict(list)
    for item in data_source:
        output[item.label].append(item)
    return output


def split_dataset_by_domain(data_source: Sequence[Datum]) -> Dict[int, List[Datum]]:
    """Group items by domain label (insertion order of first appearance)."""
    output: Dict[int, List[Datum]] = defaultdict(list)
    for item in data_source:
        output[item.domain].append(item)
    return output


# ------------------------------------------------------------------ building splits
def listdir_nohidden(path: str, sort: bool = False) -> List[str]:
    """Entries of ``path`` that do not start with a dot."""
    items = [f for f in os.listdir(path) if not f.startswith(".")]
    return sorted(items) if sort else items


def read_and_split_data(
    image_dir: str,
    p_trn: float = 0.5,
    p_val: float = 0.2,
    ignored: Sequence[str] = (),
    new_cnames: Optional[Dict[str, str]] = None,
    seed: Seed = None,
) -> Tuple[List[Datum], List[Datum], List[Datum]]:
    """Split ``image_dir/<class>/<image>`` per class into train/val/test (CoOp's DTD helper).

    Classes are the sorted folder names (minus ``ignored``), labelled 0.. in that order;
    ``new_cnames`` maps folder names to class names. Each class needs at least one image in
    every split. Files are sorted before shuffling, so a seed gives the same split everywhere.
    """
    rng = make_rng(seed)
    categories = [c for c in listdir_nohidden(image_dir, sort=True) if c not in ignored]
    p_tst = max(0.0, 1 - p_trn - p_val)
    logger.info("Splitting into %.0f%% train, %.0f%% val, and %.0f%% test",
                p_trn * 100, p_val * 100, p_tst * 100)
    train, val, test = [], [], []
    for label, category in enumerate(categories):
        category_dir = os.path.join(image_dir, category)
        images = [os.path.join(category_dir, im) for im in listdir_nohidden(category_dir, sort=True)]
        rng.shuffle(images)
        n_train, n_val = round(len(images) * p_trn), round(len(images) * p_val)
        if min(n_train, n_val, len(images) - n_train - n_val) <= 0:
            raise ValueError(
                f"Class folder {category_dir} has {len(images)} images: too few for a "
                f"{p_trn:.0%}/{p_val:.0%}/{p_tst:.0%} train/val/test split with at least one each"
            )
        classname = new_cnames.get(category, category) if new_cnames else category
        parts = (images[:n_train], images[n_train:n_train + n_val], images[n_train + n_val:])
        for out, ims in zip((train, val, test), parts):
            out.extend(Datum(impath=im, label=label, classname=classname) for im in ims)
    return train, val, test


def split_trainval(
    trainval: Sequence[Datum], p_val: float = 0.2, seed: Seed = None
) -> Tuple[List[Datum], List[Datum]]:
    """Split each class of ``trainval`` into train and val (round(n * p_val) val items per class)."""
    rng = make_rng(seed)
    logger.info("Splitting trainval into %.0f%% train and %.0f%% val", (1 - p_val) * 100, p_val * 100)
    train, val = [], []
    for label, items in split_dataset_by_label(trainval).items():
        n_val = round(len(items) * p_val)
        if n_val <= 0:
            raise ValueError(
                f"Class {label} has {len(items)} trainval items: too few for p_val={p_val}"
            )
        items = list(items)
        rng.shuffle(items)
        val.extend(items[:n_val])
        train.extend(items[n_val:])
    return train, val


# ------------------------------------------------------------------ few-shot, base/new
def generate_fewshot_dataset(
    *data_sources: Sequence[Datum], num_shots: int = -1, repeat: bool = False, seed: Seed = None
):
    """Sample ``num_shots`` items per class from each data source (Dassl semantics).

    A class with fewer items keeps them all, or is sampled with replacement when ``repeat``.
    Classes are visited in sorted label order, so the result depends only on the data and the
    seed. ``num_shots < 1`` returns the input unchanged. One source gives a list, several a list
    of lists.
    """
    if num_shots < 1:
        return data_sources[0] if len(data_sources) == 1 else data_sources
    logger.info("Creating a %d-shot dataset", num_shots)
    rng = make_rng(seed)
    output = []
    for data_source in data_sources:
        tracker = split_dataset_by_label(data_source)
        dataset: List[Datum] = []
        short = {}
        for label in sorted(tracker):
            items = tracker[label]
            if len(items) >= num_shots:
                dataset.extend(rng.sample(items, num_shots))
                continue
            short[label] = len(items)
            if repeat:
                dataset.extend(rng.choices(items, k=num_shots))
            else:
                dataset.extend(items)
        if short:
            _warn_short_classes(num_shots, short, repeat)
        output.append(dataset)
    return output[0] if len(output) == 1 else output


def _warn_short_classes(num_shots: int, short: Dict[int, int], repeat: bool) -> None:
    """Upstream takes all images of a class with fewer than ``num_shots``; say so, with numbers."""
    listed = ", ".join(f"{label}: {n}" for label, n in list(short.items())[:10])
    more = f" and {len(short) - 10} more" if len(short) > 10 else ""
    action = "sampling with repetition" if repeat else "taking all of them"
    logger.warning(f"DATASET.NUM_SHOTS {num_shots} is more than {len(short)} class(es) have "
                   f"(label: images = {listed}{more}); {action}")


def subsample_classes(*args: Sequence[Datum], subsample: str = "all"):
    """Keep the base (first ceil(n/2) sorted labels) or new (the rest) classes, relabelled from 0.

    ``n`` counts the labels found in all given data sources (upstream counts the first one only;
    both agree whenever the first source, train, has every class). Domains and class names are
    kept. ``"all"`` returns the inputs unchanged.
    """
    if subsample not in SUBSAMPLE_CHOICES:
        raise ValueError(
            f"subsample (DATASET.SUBSAMPLE_CLASSES) must be one of {', '.join(SUBSAMPLE_CHOICES)}; "
            f"got {subsample!r}"
        )
    if subsample == "all":
        return args
    labels = sorted({item.label for dataset in args for item in dataset})
    m = math.ceil(len(labels) / 2)
    selected = labels[:m] if subsample == "base" else labels[m:]
    logger.info("Subsampling %s classes: %d of %d", subsample, len(selected), len(labels))
    relabeler = {y: y_new for y_new, y in enumerate(selected)}
    return [
        [Datum(item.impath, relabeler[item.label], item.domain, item.classname)
         for item in dataset if item.label in relabeler]
        for dataset in args
    ]
