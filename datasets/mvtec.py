"""MVTec AD, read from its own layout (or a meta.json with DATASET.ANOMALY.META_FILE)::

    mvtec/<category>/train/good/NNN.png
    mvtec/<category>/test/good/NNN.png
    mvtec/<category>/test/<defect>/NNN.png
    mvtec/<category>/ground_truth/<defect>/NNN_mask.png   (0/255)

``mvtec`` may also be named as anomalib (``MVTec``, ``MVTecAD``) or the official archive
(``mvtec_anomaly_detection``) name it. Categories are the sub-folders holding ``test/``; an
image ``test/<defect>/NNN.png`` is paired with ``ground_truth/<defect>/NNN_mask.png``
(anomalib's rule: the mask stem starts with the image stem). A defect folder whose masks are
missing is an error naming the mask file.
"""
from __future__ import annotations

import os
from typing import List

from dassl_lite.data.anomaly import AnomalyDatum
from dassl_lite.registry import DATASET_REGISTRY

from .anomaly_base import AnomalyFolderDataset, Records

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _images(folder: str) -> List[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS)
                  and not f.startswith("."))


def _subfolders(folder: str) -> List[str]:
    return sorted(d for d in os.listdir(folder)
                  if not d.startswith(".") and os.path.isdir(os.path.join(folder, d)))


@DATASET_REGISTRY.register()
class MVTecAD(AnomalyFolderDataset):
    """MVTec AD (15 categories; 3,629 train good, 1,725 test images)."""

    dataset_dir = "mvtec"
    # anomalib 1.x (MVTec), 2.x (MVTecAD), the official archive, a common spelling
    dataset_dir_aliases = ("MVTec", "MVTecAD", "mvtec_anomaly_detection", "mvtec_ad")
    mask_suffix = "_mask"
    layout = ("mvtec/<category>/train/good/*.png, mvtec/<category>/test/{good,<defect>}/*.png, "
              "mvtec/<category>/ground_truth/<defect>/<stem>_mask.png")
    instructions = "see DATASETS.md#mvtec-ad"

    def read_layout(self) -> Records:
        train, test = [], []
        categories = [c for c in _subfolders(self.dataset_dir)
                      if c != "split_fewshot"]
        for category in categories:
            train += self._read_category(category, "train")
            test += self._read_category(category, "test")
        return train, test

    def _read_category(self, category: str, split: str) -> List[AnomalyDatum]:
        folder = os.path.join(self.dataset_dir, category, split)
        if not os.path.isdir(folder):
            raise self.layout_error(f"category {category!r} has no {split}/ folder: {folder}")
        records = []
        for defect in _subfolders(folder):
            names = _images(os.path.join(folder, defect))
            if defect == "good":
                records += [AnomalyDatum(os.path.join(folder, defect, n), 0, category)
                            for n in names]
            elif split == "test":
                masks = self._mask_paths(category, defect, names)
                records += [AnomalyDatum(os.path.join(folder, defect, n), 1, category, defect, m)
                            for n, m in zip(names, masks)]
        if split == "test" and not records:
            raise self.layout_error(f"no test images in {folder}")
        return records

    def _mask_paths(self, category: str, defect: str, names: List[str]) -> List[str]:
        folder = os.path.join(self.dataset_dir, category, "ground_truth", defect)
        present = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        paths = []
        for name in names:
            mask = os.path.splitext(name)[0] + self.mask_suffix + ".png"
            if mask not in present:
                raise self.layout_error(
                    f"mask file not found: {os.path.join(folder, mask)} (for test image "
                    f"{os.path.join(category, 'test', defect, name)})")
            paths.append(os.path.join(folder, mask))
        return paths
