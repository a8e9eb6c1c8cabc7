"""AnomalyFolder: own anomaly data in plain folders, after anomalib's ``Folder`` dataset.

The folders are named by ``DATASET.ANOMALY.FOLDER.*`` (anomalib's argument names)::

    <ROOT>/<NORMAL_DIR>/*.png           normal images: train, and NORMAL_SPLIT_RATIO of them
                                        held out as normal test images unless NORMAL_TEST_DIR
    <ROOT>/<ABNORMAL_DIR>/*.png         anomalous test images (or <ABNORMAL_DIR>/<defect>/*.png)
    <ROOT>/<MASK_DIR>/<stem>[_*].png    optional: one mask per anomalous image (same stem, or
                                        the stem + "_..." as MVTec's 000_mask.png; mirrors the
                                        defect sub-folders); 0/255 or 0/1
    <ROOT>/<NORMAL_TEST_DIR>/*.png      optional: normal test images

``ROOT`` holding ``NORMAL_DIR`` is one category named after ``ROOT``; otherwise every
sub-folder of ``ROOT`` holding ``NORMAL_DIR`` is a category (one folder per category). Without
``MASK_DIR`` the anomalous images have no masks: image metrics only, pixel metrics are reported
as undefined, and training on the test split is refused. Held-out normal images are drawn with
a fixed seed (0), so every run and seed tests the same images.
"""
from __future__ import annotations

import logging
import os
import random
from typing import List, Sequence, Tuple

from dassl_lite.config import ConfigError
from dassl_lite.data.anomaly import AnomalyDatum
from dassl_lite.registry import DATASET_REGISTRY

from .anomaly_base import AnomalyFolderDataset, Records
from .mvtec import IMAGE_EXTS, _subfolders

logger = logging.getLogger(__name__)

KEYS = "DATASET.ANOMALY.FOLDER"


@DATASET_REGISTRY.register()
class AnomalyFolder(AnomalyFolderDataset):
    """Own anomaly images in normal / abnormal / mask folders, for one or several categories."""

    dataset_dir = ""  # DATASET.ROOT itself
    layout = ("<ROOT>/<NORMAL_DIR>/*, <ROOT>/<ABNORMAL_DIR>/[<defect>/]*, optional "
              "<ROOT>/<MASK_DIR>/[<defect>/]<stem>[_*].png and <ROOT>/<NORMAL_TEST_DIR>/*, or "
              "the same under each <ROOT>/<category>/ (folder names: DATASET.ANOMALY.FOLDER.*)")
    instructions = "see docs/anomaly.md#own-data-anomalyfolder"

    def read_layout(self) -> Records:
        opts = self.cfg.DATASET.ANOMALY.FOLDER
        if not opts.NORMAL_DIR:
            raise ConfigError(f"{KEYS}.NORMAL_DIR must name the folder of normal images")
        if not 0 <= opts.NORMAL_SPLIT_RATIO < 1:
            raise ConfigError(f"{KEYS}.NORMAL_SPLIT_RATIO must be in [0, 1); got "
                              f"{opts.NORMAL_SPLIT_RATIO}")
        self.extensions = tuple(e.lower() for e in opts.EXTENSIONS) or IMAGE_EXTS
        self.masks_required = bool(opts.MASK_DIR)
        root = self.dataset_dir
        if os.path.isdir(os.path.join(root, opts.NORMAL_DIR)):
            categories = [(os.path.basename(os.path.normpath(root)), root)]
        else:
            subs = _subfolders(root)
            categories = [(c, os.path.join(root, c)) for c in subs
                          if os.path.isdir(os.path.join(root, c, opts.NORMAL_DIR))]
            skipped = [c for c in subs if c not in dict(categories)]
            if categories and skipped:
                logger.warning("AnomalyFolder: sub-folders of %s without %s/ are not categories "
                               "and are skipped: %s", root, opts.NORMAL_DIR, ", ".join(skipped))
            if not categories:
                raise self.layout_error(
                    f"no normal image folder: neither {os.path.join(root, opts.NORMAL_DIR)} nor "
                    f"{os.path.join(root, '<category>', opts.NORMAL_DIR)} exists "
                    f"({KEYS}.NORMAL_DIR={opts.NORMAL_DIR!r})")
        train, test = [], []
        for category, folder in categories:
            tr, te = self._read_category(category, folder)
            train, test = train + tr, test + te
        return train, test

    # ------------------------------------------------------------------ one category
    def _read_category(self, category: str, folder: str) -> Records:
        opts = self.cfg.DATASET.ANOMALY.FOLDER
        normal = [AnomalyDatum(p, 0, category)
                  for p in self._images(folder, opts.NORMAL_DIR, "NORMAL_DIR")]
        if opts.NORMAL_TEST_DIR:
            test = [AnomalyDatum(p, 0, category)
                    for p in self._images(folder, opts.NORMAL_TEST_DIR, "NORMAL_TEST_DIR")]
            train = normal
        else:
            train, test = _hold_out(normal, opts.NORMAL_SPLIT_RATIO)
        abnormal = os.path.join(folder, opts.ABNORMAL_DIR) if opts.ABNORMAL_DIR else ""
        if abnormal and os.path.isdir(abnormal):
            test += self._abnormal(category, folder, abnormal)
            if not any(d.label == 0 for d in test):
                logger.warning("AnomalyFolder: category %r has no normal test images (%s.%s)",
                               category, KEYS, "NORMAL_TEST_DIR" if opts.NORMAL_TEST_DIR
                               else "NORMAL_SPLIT_RATIO")
        elif abnormal:
            logger.warning("AnomalyFolder: category %r has no anomalous images (%s does not "
                           "exist; %s.ABNORMAL_DIR=%r)", category, abnormal, KEYS,
                           opts.ABNORMAL_DIR)
        return train, test

    def _images(self, folder: str, name: str, key: str) -> List[str]:
        path = os.path.join(folder, name)
        if not os.path.isdir(path):
            raise self.layout_error(f"{KEYS}.{key} folder not found: {path}")
        files = self._files(path)
        if not files:
            raise self.layout_error(f"no images ({', '.join(self.extensions)}) in {path} "
                                    f"({KEYS}.{key})")
        return files

    def _files(self, path: str) -> List[str]:
        return [os.path.join(path, f) for f in sorted(os.listdir(path))
                if f.lower().endswith(self.extensions) and not f.startswith(".")
                and os.path.isfile(os.path.join(path, f))]

    def _abnormal(self, category: str, folder: str, abnormal: str) -> List[AnomalyDatum]:
        """The anomalous images: files in ABNORMAL_DIR (defect = its name) and in each of its
        sub-folders (defect = the sub-folder), with their masks when MASK_DIR is set."""
        opts = self.cfg.DATASET.ANOMALY.FOLDER
        groups = [(os.path.basename(os.path.normpath(abnormal)), abnormal, "")]
        groups += [(d, os.path.join(abnormal, d), d) for d in _subfolders(abnormal)]
        records = []
        for defect, path, sub in groups:
            images = self._files(path)
            if not images:
                continue
            masks = (self._masks(images, os.path.normpath(os.path.join(folder, opts.MASK_DIR, sub)))
                     if opts.MASK_DIR else [""] * len(images))
            records += [AnomalyDatum(i, 1, category, defect, m) for i, m in zip(images, masks)]
        if not records:
            raise self.layout_error(f"no images ({', '.join(self.extensions)}) in {abnormal} or "
                                    f"its sub-folders ({KEYS}.ABNORMAL_DIR)")
        return records

    def _masks(self, images: Sequence[str], mask_dir: str) -> List[str]:
        """The mask of each image in ``mask_dir``: the file with the image's stem, or the stem
        followed by ``_`` (``000_mask.png``); a missing or ambiguous one is an error."""
        if not os.path.isdir(mask_dir):
            raise self.layout_error(f"{KEYS}.MASK_DIR folder not found: {mask_dir} (masks of the "
                                    f"{len(images)} anomalous images beside {images[0]})")
        files = [f for f in sorted(os.listdir(mask_dir)) if not f.startswith(".")]
        stems = {f: os.path.splitext(f)[0] for f in files}
        out, used = [], set()
        for image in images:
            stem = os.path.splitext(os.path.basename(image))[0]
            exact = [f for f in files if stems[f] == stem]
            hits = exact or [f for f in files if stems[f].startswith(stem + "_")]
            if len(hits) != 1:
                what = ("no mask" if not hits else f"several masks ({', '.join(hits)})")
                raise self.layout_error(
                    f"{what} for anomalous image {image} in {mask_dir}: expected one file named "
                    f"{stem}.png or {stem}_<anything>.png ({KEYS}.MASK_DIR)")
            out.append(os.path.join(mask_dir, hits[0]))
            used.add(hits[0])
        spare = [f for f in files if f not in used and os.path.isfile(os.path.join(mask_dir, f))]
        if spare:
            logger.warning("AnomalyFolder: %d file(s) in %s belong to no anomalous image, "
                           "e.g. %s", len(spare), mask_dir, spare[0])
        return out


def _hold_out(normal: List[AnomalyDatum], ratio: float) -> Tuple[List[AnomalyDatum], ...]:
    """(train, test): ``round(ratio * n)`` (at least 1 when ratio > 0 and n > 1) of the normal
    images drawn with seed 0 go to test."""
    n_test = max(1, round(ratio * len(normal))) if ratio > 0 and len(normal) > 1 else 0
    picked = set(random.Random(0).sample(range(len(normal)), n_test))
    return ([d for i, d in enumerate(normal) if i not in picked],
            [d for i, d in enumerate(normal) if i in picked])
