"""SUN397: 397 scene categories (``sun397/``)."""
from __future__ import annotations

import os
from typing import Dict, List

from dassl_lite.data import Datum
from dassl_lite.registry import DATASET_REGISTRY

from .benchmark import BenchmarkDataset


def scene_name(folder: str) -> str:
    """Upstream's class name of a category folder: ``a/apartment_building/outdoor`` ->
    ``outdoor apartment_building`` (initial letter dropped, the remaining parts reversed)."""
    return " ".join(folder.split("/")[1:][::-1])


@DATASET_REGISTRY.register()
class SUN397(BenchmarkDataset):
    """``SUN397/<letter>/<category>[/<sub>]/*.jpg``; the split is built from the first official
    partition (``ClassName.txt``, ``Training_01.txt``, ``Testing_01.txt``; val: 20% of
    training per class)."""

    dataset_dir = "sun397"
    image_dir = "SUN397"
    split_file = "split_zhou_SUN397.json"
    split_file_id = "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq"
    raw_annotations = ("ClassName.txt", "Training_01.txt", "Testing_01.txt")
    num_classes_expected = 397
    layout = ("sun397/SUN397/<letter>/<category>/*.jpg + sun397/split_zhou_SUN397.json "
              "(or sun397/{ClassName,Training_01,Testing_01}.txt to build it)")
    instructions = "see DATASETS.md#sun397"

    def build_split(self):
        folders = [line.lstrip("/") for _, line in self.read_lines("ClassName.txt")]
        label_of = {folder: label for label, folder in enumerate(folders)}
        trainval = self.read_list("Training_01.txt", label_of)
        test = self.read_list("Testing_01.txt", label_of)
        train, val = self.carve_val(trainval)
        return train, val, test

    def read_list(self, relpath: str, label_of: Dict[str, int]) -> List[Datum]:
        """Items of a partition list: lines ``/<letter>/<category>/<image>.jpg``."""
        items = []
        for number, line in self.read_lines(relpath):
            rel = line.lstrip("/")
            folder = rel.rpartition("/")[0]
            if folder not in label_of:
                raise self.bad_line(relpath, number, line,
                                    "'/<category from ClassName.txt>/<image>.jpg'")
            impath = os.path.join(self.image_dir, *rel.split("/"))
            items.append(Datum(impath=impath, label=label_of[folder], classname=scene_name(folder)))
        return items
