"""The template of anomaly detection datasets read from their own layouts or a ``meta.json``.

``Cls(cfg)`` resolves ``<DATASET.ROOT>/<dataset_dir>``, reads (train, test) records from the
dataset's layout (:meth:`read_layout`) or, when ``DATASET.ANOMALY.META_FILE`` is set, from that
APRIL-GAN / AnomalyCLIP meta file in the dataset folder, keeps ``DATASET.ANOMALY.CATEGORIES``,
and picks what the trainer trains on:

- ``DATASET.NUM_SHOTS`` k > 0: k normal train images per category, drawn with ``SEED``
  (few-shot references; the same k and seed give the same images);
- else ``DATASET.ANOMALY.TRAIN_SPLIT`` ``train`` (the normal train images) or ``test`` (the
  whole test split with masks: zero-shot methods train on another dataset's test split).

The test split is always the whole test split.
"""
from __future__ import annotations

import json
import logging
import os
import random
from typing import Dict, List, Sequence, Tuple

from dassl_lite.data import DatasetLayoutError
from dassl_lite.data.anomaly import AnomalyDataset, AnomalyDatum
from dassl_lite.config import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["AnomalyFolderDataset", "read_meta_json", "sample_references"]

Records = Tuple[List[AnomalyDatum], List[AnomalyDatum]]
TRAIN_SPLITS = ("train", "test")
META_KEYS = ("img_path", "mask_path", "cls_name", "specie_name", "anomaly")


def sample_references(train: Sequence[AnomalyDatum], k: int, seed: int) -> List[AnomalyDatum]:
    """k normal images per category (sorted by path, then drawn with ``random.Random(seed)``
    category by category in sorted order); fewer when a category has fewer."""
    rng = random.Random(seed)
    by_cat: Dict[str, List[AnomalyDatum]] = {}
    for d in train:
        if d.label == 0:
            by_cat.setdefault(d.category, []).append(d)
    out = []
    for cat in sorted(by_cat):
        items = sorted(by_cat[cat], key=lambda d: d.impath)
        if len(items) < k:
            logger.warning("Category %r has %d normal train images; %d-shot uses them all",
                           cat, len(items), k)
        out += rng.sample(items, min(k, len(items)))
    return out


def read_meta_json(path: str, root: str) -> Records:
    """(train, test) records of an APRIL-GAN / AnomalyCLIP ``meta.json`` (paths relative to
    ``root``; ``"mask_path": ""`` for normal images)."""
    try:
        with open(path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise DatasetLayoutError(f"meta file not found: {path} (DATASET.ANOMALY.META_FILE)") from None
    except IsADirectoryError:
        raise DatasetLayoutError(f"meta file {path} is a folder; expected a JSON file "
                                 f"(DATASET.ANOMALY.META_FILE)") from None
    except ValueError as e:
        raise DatasetLayoutError(f"meta file {path} is not valid JSON: {e}") from None
    shape = "{'train': {category: [entry, ...]}, 'test': {category: [entry, ...]}}"
    if not isinstance(meta, dict):
        raise DatasetLayoutError(f"meta file {path} must hold {shape}; got a JSON "
                                 f"{type(meta).__name__}")
    for split in ("train", "test"):
        if not isinstance(meta.get(split, {}), dict) or (split == "test" and "test" not in meta):
            got = type(meta[split]).__name__ if split in meta else "nothing"
            raise DatasetLayoutError(f"meta file {path}: '{split}' must map category names to "
                                     f"lists of entries ({shape}); got {got}")
    splits = []
    for split in ("train", "test"):
        records = []
        for category, entries in (meta.get(split) or {}).items():
            if not isinstance(entries, list):
                raise DatasetLayoutError(f"meta file {path}: {split}/{category} must be a list of "
                                         f"entries; got {type(entries).__name__}")
            for i, e in enumerate(entries):
                where = f"meta file {path}: {split}/{category}[{i}]"
                if not isinstance(e, dict):
                    raise DatasetLayoutError(f"{where} must be an object with keys "
                                             f"{list(META_KEYS)}; got {type(e).__name__}")
                missing = [k for k in META_KEYS if k not in e]
                if missing:
                    raise DatasetLayoutError(f"{where} lacks "
                                             f"{missing} (expected keys {list(META_KEYS)})")
                if e["anomaly"] not in (0, 1) or isinstance(e["anomaly"], float):
                    raise DatasetLayoutError(f"{where}: \"anomaly\" must be 0 (normal) or 1 "
                                             f"(anomalous); got {e['anomaly']!r}")
                if e["mask_path"] and not int(e["anomaly"]):
                    raise DatasetLayoutError(
                        f"{where} is a normal image "
                        f"({e['img_path']}, \"anomaly\": 0) with a defect mask "
                        f"{e['mask_path']}; normal images take \"mask_path\": \"\" (is the "
                        f"label wrong?)")
                mask = os.path.join(root, e["mask_path"]) if e["mask_path"] else ""
                records.append(AnomalyDatum(os.path.join(root, e["img_path"]), int(e["anomaly"]),
                                            e["cls_name"] or category, e["specie_name"], mask))
        splits.append(records)
    return splits[0], splits[1]


class AnomalyFolderDataset(AnomalyDataset):
    """An anomaly dataset under ``<DATASET.ROOT>/<dataset_dir>`` (see the module docstring).

    Subclasses set ``dataset_dir``, ``layout`` and ``instructions`` and implement
    :meth:`read_layout`; :meth:`prepare` may create the folder (toy datasets).
    """

    dataset_dir = ""  # folder under DATASET.ROOT
    dataset_dir_aliases: Tuple[str, ...] = ()  # other names of that folder (other tools')
    layout = ""  # the expected layout, for error messages
    instructions = ""  # where to read how to get the data

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.prepare(root)
        self.dataset_dir = self.resolve_dir(root)
        if not os.path.isdir(self.dataset_dir):
            also = type(self).dataset_dir_aliases
            also = f", nor {', '.join(also)} beside it" if also else ""
            raise self.layout_error(f"dataset folder not found: {self.dataset_dir}{also} "
                                    f"(DATASET.ROOT={cfg.DATASET.ROOT!r})")
        opts = cfg.DATASET.ANOMALY
        if opts.META_FILE:
            train, test = read_meta_json(os.path.join(self.dataset_dir, opts.META_FILE),
                                         self.dataset_dir)
        else:
            train, test = self.read_layout()
        train, test = self._keep_categories(train, test, list(opts.CATEGORIES))
        if not test:
            raise self.layout_error(f"no test images found under {self.dataset_dir}")
        super().__init__(train_x=self._train_split(cfg, train, test), test=test)

    def resolve_dir(self, root: str) -> str:
        """``<root>/<dataset_dir>``, or else the one of ``<root>/<alias>`` that exists (other
        tools' folder names, e.g. anomalib's ``MVTec``), or ``root`` itself when its name is
        one of them; a notice says which folder is used. Several aliases present is an error."""
        cls = type(self)
        own = os.path.join(root, cls.dataset_dir)
        if os.path.isdir(own) or not cls.dataset_dir_aliases:
            return own
        found = [os.path.join(root, a) for a in cls.dataset_dir_aliases
                 if os.path.isdir(os.path.join(root, a))]
        found = sorted({os.path.realpath(p): p for p in found}.values())  # case-insensitive FS
        if len(found) > 1:
            raise self.layout_error(f"several folders could hold {cls.__name__}: "
                                    f"{', '.join(found)}; rename the one to use to {own}")
        if not found and os.path.basename(root) in (cls.dataset_dir,) + cls.dataset_dir_aliases:
            found = [root]
        if found:
            logger.info("%s: reading %s (%s is absent)", cls.__name__, found[0], own)
            return found[0]
        return own

    # ------------------------------------------------------------------ hooks
    def prepare(self, root: str) -> None:
        """Called before the folder is read (toy datasets generate it here)."""

    def read_layout(self) -> Records:
        """(train, test) records from the dataset's own layout; every dataset overrides this."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def layout_error(self, problem: str) -> DatasetLayoutError:
        """``problem`` + the expected layout + where the instructions are."""
        cls = type(self)
        hint = f" Instructions: {cls.instructions}." if cls.instructions else ""
        return DatasetLayoutError(f"{cls.__name__}: {problem}. Expected layout under "
                                  f"DATASET.ROOT: {cls.layout}.{hint}")

    def references(self, category: str) -> List[AnomalyDatum]:
        """The training records of ``category`` (the k-shot references when NUM_SHOTS > 0)."""
        return [d for d in self.train_x if d.category == category]

    @staticmethod
    def _keep_categories(train, test, keep: List[str]) -> Records:
        if not keep:
            return train, test
        known = sorted({d.category for d in test})
        odd = [c for c in keep if c not in known]
        if odd:
            raise ConfigError(f"DATASET.ANOMALY.CATEGORIES {odd} not found; categories: {known}")
        return ([d for d in train if d.category in keep], [d for d in test if d.category in keep])

    @staticmethod
    def _train_split(cfg, train, test) -> List[AnomalyDatum]:
        k = cfg.DATASET.NUM_SHOTS
        if k > 0:
            return sample_references(train, k, max(cfg.SEED, 0))
        split = cfg.DATASET.ANOMALY.TRAIN_SPLIT
        if split not in TRAIN_SPLITS:
            raise ConfigError(f"DATASET.ANOMALY.TRAIN_SPLIT must be one of "
                              f"{', '.join(TRAIN_SPLITS)}; got {split!r}")
        return list(test) if split == "test" else list(train)
