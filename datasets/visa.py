"""VisA, read from its own layout (or a meta.json with DATASET.ANOMALY.META_FILE)::

    visa/split_csv/1cls.csv          header object,split,label,image,mask
    visa/<object>/Data/Images/{Normal,Anomaly}/*.JPG
    visa/<object>/Data/Masks/Anomaly/*.png   (defect ids 1..k; binarised with != 0)

Rows of ``1cls.csv`` give the split (train/test), the label (normal/anomaly) and the image and
mask paths relative to the VisA folder. VisA has no defect-type names: anomalies get "anomaly".
"""
from __future__ import annotations

import csv
import os

from dassl_lite.data.anomaly import AnomalyDatum
from dassl_lite.registry import DATASET_REGISTRY

from .anomaly_base import AnomalyFolderDataset, Records

CSV_HEADER = ["object", "split", "label", "image", "mask"]
LABELS = {"normal": 0, "anomaly": 1}


@DATASET_REGISTRY.register()
class VisA(AnomalyFolderDataset):
    """VisA (12 objects; 1cls split: 8,659 train normal, 2,162 test images)."""

    dataset_dir = "visa"
    dataset_dir_aliases = ("VisA",)  # the archive's own spelling
    split_csv = os.path.join("split_csv", "1cls.csv")
    layout = ("visa/split_csv/1cls.csv (object,split,label,image,mask) and "
              "visa/<object>/Data/{Images/{Normal,Anomaly},Masks/Anomaly}/...")
    instructions = "see DATASETS.md#visa"
    mask_values = "ids"  # masks hold defect ids 1..k; any non-zero pixel is a defect

    def read_layout(self) -> Records:
        path = os.path.join(self.dataset_dir, self.split_csv)
        if not os.path.isfile(path):
            raise self.layout_error(f"split file not found: {path}")
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != CSV_HEADER:
                raise self.layout_error(f"{path} must start with the header "
                                        f"{','.join(CSV_HEADER)}; got {header}")
            splits = {"train": [], "test": []}
            for line, row in enumerate(reader, start=2):
                splits[self._check_row(row, path, line)].append(self._record(row))
        return splits["train"], splits["test"]

    def _check_row(self, row, path: str, line: int) -> str:
        if len(row) != 5 or row[1] not in ("train", "test") or row[2] not in LABELS:
            raise self.layout_error(f"{path} line {line}: expected object,train|test,"
                                    f"normal|anomaly,image,mask; got {row}")
        if row[2] == "anomaly" and not row[4]:
            raise self.layout_error(f"{path} line {line}: anomaly {row[3]} has no mask path")
        if row[2] == "normal" and row[4]:
            raise self.layout_error(f"{path} line {line}: normal image {row[3]} has a defect "
                                    f"mask {row[4]}; normal rows take an empty mask column "
                                    f"(is the label wrong?)")
        return row[1]

    def _record(self, row) -> AnomalyDatum:
        obj, _, label, image, mask = row
        root = self.dataset_dir
        return AnomalyDatum(os.path.join(root, image), LABELS[label], obj,
                            "anomaly" if label == "anomaly" else "",
                            os.path.join(root, mask) if mask else "")
