"""AnomalyImages: unlabelled images (one file or a folder) to score with an anomaly trainer.

``DATASET.ROOT`` is an image file or a folder of images (not searched recursively); every image
is a test (and train) record of category ``DATASET.ANOMALY.CATEGORIES[0]`` (default "object"),
labelled normal and without a mask. Used by ``tools/anomaly_heatmap.py``.
"""
from __future__ import annotations

import os

from dassl_lite.data import DatasetLayoutError
from dassl_lite.data.anomaly import AnomalyDataset, AnomalyDatum
from dassl_lite.registry import DATASET_REGISTRY

from .mvtec import IMAGE_EXTS


@DATASET_REGISTRY.register()
class AnomalyImages(AnomalyDataset):
    """The images at ``DATASET.ROOT`` (a file or a folder) as one category to score."""

    def __init__(self, cfg) -> None:
        path = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        if os.path.isdir(path):
            files = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if f.lower().endswith(IMAGE_EXTS) and not f.startswith("."))
        elif os.path.isfile(path):
            files = [path]
        else:
            raise DatasetLayoutError(f"AnomalyImages: no such file or folder: {path} "
                                     f"(DATASET.ROOT)")
        if not files:
            raise DatasetLayoutError(f"AnomalyImages: no images ({', '.join(IMAGE_EXTS)}) in "
                                     f"{path}")
        category = (list(cfg.DATASET.ANOMALY.CATEGORIES) or ["object"])[0]
        records = [AnomalyDatum(f, 0, category) for f in files]
        super().__init__(train_x=records, test=records)
