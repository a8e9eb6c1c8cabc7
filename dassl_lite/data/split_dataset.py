"""SplitDataset: the template of CoOp-style datasets (split file, few-shot cache, base/new)."""
from __future__ import annotations

import json
import logging
import os
import random
from typing import List, Optional, Sequence, Tuple

from .dataset_base import DatasetBase
from .datum import Datum
from .errors import DatasetLayoutError
from .splits import items_from_json, items_to_json, write_json

logger = logging.getLogger(__name__)

Splits = Tuple[List[Datum], List[Datum], List[Datum]]


class SplitDataset(DatasetBase):
    """A dataset read from ``<DATASET.ROOT>/<dataset_dir>/<split_file>`` (upstream split format).

    ``Cls(cfg)`` resolves the folders (``self.dataset_dir``/``self.image_dir`` become absolute),
    checks them, loads the split (:meth:`load_split`), checks it, samples
    ``DATASET.NUM_SHOTS`` train images (and min(K, 4) val images) per class seeded by ``SEED``
    and cached in ``split_fewshot/shot_<K>-seed_<S>.json``, then keeps the classes chosen by
    ``DATASET.SUBSAMPLE_CLASSES``. A subclass sets the class attributes below and, when the split
    file can be rebuilt from raw annotations, overrides :meth:`build_split`.
    """

    dataset_dir = ""  # folder under DATASET.ROOT
    image_dir = "images"  # folder under dataset_dir; split file paths are relative to it
    split_file = ""  # e.g. "split_zhou_OxfordPets.json", under dataset_dir
    num_classes_expected: Optional[int] = None  # checked against the split when set
    has_val = True  # False: the dataset has no val split (an empty val is then allowed)
    layout = ""  # expected layout for error messages; default derived from the attributes
    instructions = ""  # where to read how to get the data, e.g. "see DATASETS.md#oxford-pets"

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.dataset_dir = self.find_dataset_dir(root)
        self.image_dir = os.path.join(self.dataset_dir, type(self).image_dir)
        self.split_path = os.path.join(self.dataset_dir, type(self).split_file)
        self.split_fewshot_dir = os.path.join(self.dataset_dir, "split_fewshot")
        self.split_source = self.split_path  # what error messages name as the split's origin
        self._check_folder(self.dataset_dir, f"dataset folder not found (DATASET.ROOT={cfg.DATASET.ROOT!r})")
        self._check_folder(self.image_dir, "image folder not found")
        train, val, test = self.load_split()
        self.check_splits(train, val, test)
        train, val = self.sample_fewshot(train, val, cfg.DATASET.NUM_SHOTS, cfg.SEED)
        train, val, test = self.subsample_classes(
            train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES
        )
        super().__init__(train_x=train, val=val, test=test)

    # ------------------------------------------------------------------ hooks
    def find_dataset_dir(self, root: str) -> str:
        """The dataset folder under ``root`` (``root/<dataset_dir>``); override to accept other
        layouts of the same data (e.g. a doubled folder left by an archive)."""
        return os.path.join(root, type(self).dataset_dir)

    def load_split(self) -> Splits:
        """(train, val, test): read the split file, or build it with :meth:`build_split` and save it."""
        split_file = type(self).split_file
        if split_file and os.path.isfile(self.split_path):
            return self.read_split(self.split_path, self.image_dir)
        self.split_source = f"the split built by {type(self).__name__}.build_split()"
        if not split_file:
            return self.build_split()
        logger.info("Split file %s not found; building it from raw annotations", self.split_path)
        train, val, test = self.build_split()
        self.check_splits(train, val, test)  # a bad split is never saved
        try:
            self.save_split(train, val, test, self.split_path, self.image_dir)
        except OSError as e:
            logger.warning("Could not save the split to %s (%s); it is rebuilt next time",
                           self.split_path, e)
        return train, val, test

    def build_split(self) -> Splits:
        """Build (train, val, test) from raw annotations; override in datasets that can."""
        raise self.layout_error(
            f"split file not found: {self.split_path}, and {type(self).__name__} cannot build it "
            "from raw annotations"
        )

    # ------------------------------------------------------------------ checks
    def layout_error(self, problem: str) -> DatasetLayoutError:
        """A DatasetLayoutError: ``problem``, the expected layout and where the instructions are."""
        cls = type(self)
        layout = cls.layout or f"{cls.dataset_dir}/{cls.image_dir}/... + {cls.dataset_dir}/{cls.split_file}"
        hint = f" Instructions: {cls.instructions}." if cls.instructions else ""
        return DatasetLayoutError(
            f"{cls.__name__}: {problem}. Expected layout under DATASET.ROOT: {layout}.{hint}"
        )

    def _check_folder(self, path: str, problem: str) -> None:
        if not os.path.isdir(path):
            raise self.layout_error(f"{problem}: {path}")

    def check_splits(self, train: Sequence[Datum], val: Sequence[Datum], test: Sequence[Datum]) -> None:
        """Raise DatasetLayoutError for an empty split, non-contiguous labels, a wrong class count
        or a first image that does not exist; warn about classes without train images."""
        named = {"train": train, "val": val, "test": test}
        for name, items in named.items():
            if not items and (name != "val" or self.has_val):
                raise self.layout_error(f"the {name} split is empty in {self.split_source}")
        labels = {item.label for items in named.values() for item in items}
        n = max(labels) + 1
        if labels != set(range(n)):
            missing = sorted(set(range(n)) - labels)[:10]
            odd = sorted(labels - set(range(n)))[:10]
            raise self.layout_error(
                f"labels in {self.split_source} must be 0..{n - 1} without gaps; "
                f"missing {missing}, unexpected {odd}"
            )
        expected = type(self).num_classes_expected
        if expected is not None and n != expected:
            raise self.layout_error(f"expected {expected} classes but {self.split_source} has {n}")
        for name, items in named.items():
            if items and not os.path.exists(items[0].impath):
                raise self.layout_error(
                    f"the first {name} image {items[0].impath} (from {self.split_source}) does not exist"
                )
        no_train = sorted(labels - {item.label for item in train})
        if no_train:
            logger.warning("%d classes of %s have no train images: %s",
                           len(no_train), self.split_source, no_train[:10])

    # ------------------------------------------------------------------ few-shot
    def fewshot_cache_path(self, num_shots: int, seed: int) -> str:
        """``<dataset_dir>/split_fewshot/shot_<K>-seed_<S>.json``."""
        return os.path.join(self.split_fewshot_dir, f"shot_{num_shots}-seed_{seed}.json")

    def sample_fewshot(
        self, train: List[Datum], val: List[Datum], num_shots: int, seed: int
    ) -> Tuple[List[Datum], List[Datum]]:
        """K train and min(K, 4) val items per class; cached per (K, seed) when seed >= 0."""
        if num_shots < 1:
            return train, val
        if seed < 0:
            logger.info(
                "SEED=%d < 0: sampling a %d-shot split without caching it "
                "(set SEED >= 0 for a reproducible, cached split)", seed, num_shots
            )
            return self._draw_fewshot(train, val, num_shots, None)
        path = self.fewshot_cache_path(num_shots, seed)
        cached = self._read_fewshot_cache(path, train, val)
        if cached is not None:
            return cached
        train, val = self._draw_fewshot(train, val, num_shots, random.Random(seed))
        try:
            write_json({"train": items_to_json(train, self.dataset_dir),
                        "val": items_to_json(val, self.dataset_dir)}, path)
            logger.info("Saved few-shot split to %s", path)
        except OSError as e:
            logger.warning("Could not save the few-shot split to %s (%s)", path, e)
        return train, val

    def _draw_fewshot(self, train, val, num_shots: int, rng) -> Tuple[List[Datum], List[Datum]]:
        # One stream for train then val, like upstream's global RNG after set_random_seed(SEED):
        # with classes listed in label order (as in split_zhou files) the picks are upstream's.
        train = self.generate_fewshot_dataset(train, num_shots=num_shots, seed=rng)
        if val:
            val = self.generate_fewshot_dataset(val, num_shots=min(num_shots, 4), seed=rng)
        return train, val

    def _read_fewshot_cache(self, path: str, train, val) -> Optional[Tuple[List[Datum], List[Datum]]]:
        """The cached (train, val) as items of the current split; None when absent or stale."""
        if not os.path.isfile(path):
            return None
        try:
            with open(path, "r") as f:
                data = json.load(f)
            cached = [items_from_json(data[k], self.dataset_dir) for k in ("train", "val")]
        except (ValueError, KeyError, TypeError) as e:
            logger.warning("Ignoring unreadable few-shot cache %s (%s); sampling again", path, e)
            return None
        out = []
        for items, source in zip(cached, (train, val)):
            index = {_key(d): d for d in source}
            found = [index.get(_key(d)) for d in items]
            if None in found:
                logger.warning("Few-shot cache %s does not match %s; sampling again", path, self.split_source)
                return None
            out.append(found)
        logger.info("Reading few-shot split from %s", path)
        return out[0], out[1]


def _key(item: Datum) -> Tuple[str, int, str]:
    return os.path.normpath(item.impath), item.label, item.classname
