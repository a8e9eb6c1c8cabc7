"""CUB-200-2011: 200 bird species (``CUB_200_2011/``), as used by VPT's FGVC benchmark."""
from __future__ import annotations

import os
from typing import Dict

from dassl_lite.data import Datum
from dassl_lite.registry import DATASET_REGISTRY

from .benchmark import BenchmarkDataset

ANNOTATIONS = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
P_VAL = 0.1  # share of the official train images per class kept for val (VPT: 90/10)


@DATASET_REGISTRY.register()
class CUB200(BenchmarkDataset):
    """The extracted ``CUB_200_2011/`` folder: ``images/<nnn.Class_Name>/*.jpg`` and the official
    annotation files. The split (``split_zhou_CUB200.json``) is built from them: the official
    train/test split, with 10% of the train images of each class carved out (seeded) for val.
    Class names are the folder names without their number ("Black_footed_Albatross")."""

    dataset_dir = "CUB_200_2011"
    image_dir = "images"
    split_file = "split_zhou_CUB200.json"
    raw_annotations = ANNOTATIONS
    num_classes_expected = 200
    layout = ("CUB_200_2011/images/<nnn.Class_Name>/*.jpg + CUB_200_2011/{images,"
              "image_class_labels,train_test_split,classes}.txt")
    instructions = "see DATASETS.md#cub200"

    def build_split(self):
        images, labels, is_train, classes = (self.read_id_map(name) for name in ANNOTATIONS)
        trainval, test = [], []
        for image_id, relpath in images.items():
            if image_id not in labels or image_id not in is_train:
                raise self.layout_error(f"image id {image_id} ({relpath}) has no entry in "
                                        "image_class_labels.txt or train_test_split.txt")
            class_id = labels[image_id]
            if class_id not in classes:
                raise self.layout_error(f"class id {class_id} of image {relpath} is not in classes.txt")
            classname = classes[class_id].partition(".")[2] or classes[class_id]
            item = Datum(impath=os.path.join(self.image_dir, *relpath.split("/")),
                         label=int(class_id) - 1, classname=classname)
            (trainval if is_train[image_id] == "1" else test).append(item)
        train, val = self.carve_val(trainval, p_val=P_VAL)
        return train, val, test

    def read_id_map(self, relpath: str) -> Dict[str, str]:
        """``{id: value}`` of a file of lines ``<id> <value>``."""
        mapping = {}
        for number, line in self.read_lines(relpath):
            key, _, value = line.partition(" ")
            if not key.isdigit() or not value:
                raise self.bad_line(relpath, number, line, "'<id> <value>'")
            mapping[key] = value.strip()
        return mapping
