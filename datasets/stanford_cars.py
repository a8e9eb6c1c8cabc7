"""Stanford Cars: 196 car models (``stanford_cars/``)."""
from __future__ import annotations

import os
from typing import List

from dassl_lite.data import Datum
from dassl_lite.registry import DATASET_REGISTRY

from .benchmark import BenchmarkDataset

TRAIN_ANNOS = "devkit/cars_train_annos.mat"
TEST_ANNOS = "cars_test_annos_withlabels.mat"
META = "devkit/cars_meta.mat"


def year_first(name: str) -> str:
    """Upstream's class name: the model year moved to the front ("2012 Acura RL Sedan")."""
    *words, year = name.split(" ")
    return " ".join([year, *words])


@DATASET_REGISTRY.register()
class StanfordCars(BenchmarkDataset):
    """``cars_train/*.jpg`` and ``cars_test/*.jpg`` (split paths are relative to the dataset
    folder); the split is built from the devkit's ``.mat`` annotations (val: 20% of train per
    class). Building needs scipy."""

    dataset_dir = "stanford_cars"
    image_dir = ""  # split paths start with cars_train/ or cars_test/
    split_file = "split_zhou_StanfordCars.json"
    split_file_id = "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"
    raw_annotations = (TRAIN_ANNOS, META, TEST_ANNOS)
    num_classes_expected = 196
    layout = ("stanford_cars/{cars_train,cars_test}/*.jpg + stanford_cars/split_zhou_StanfordCars.json "
              f"(or stanford_cars/{{{TRAIN_ANNOS},{META},{TEST_ANNOS}}} to build it)")
    instructions = "see DATASETS.md#stanfordcars"

    def build_split(self):
        (class_names,) = self.load_mat(META, "class_names")
        names = [year_first(str(n).strip()) for n in class_names.reshape(-1)]
        trainval = self.read_annotations(TRAIN_ANNOS, "cars_train", names)
        test = self.read_annotations(TEST_ANNOS, "cars_test", names)
        train, val = self.carve_val(trainval)
        return train, val, test

    def read_annotations(self, relpath: str, folder: str, names: List[str]) -> List[Datum]:
        """Items of an annotation struct array with fields ``fname`` and ``class`` (1-based)."""
        (annotations,) = self.load_mat(relpath, "annotations")
        items = []
        for entry in annotations.reshape(-1):
            label = int(entry["class"]) - 1
            if not 0 <= label < len(names):
                raise self.layout_error(f"{relpath}: class {label + 1} of {entry['fname']} is not "
                                        f"in 1..{len(names)} ({META})")
            impath = os.path.join(self.image_dir, folder, str(entry["fname"]))
            items.append(Datum(impath=impath, label=label, classname=names[label]))
        return items
