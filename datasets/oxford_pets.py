"""Oxford-IIIT Pets: 37 cat and dog breeds (``oxford_pets/``)."""
from __future__ import annotations

import os
from typing import List

from dassl_lite.data import Datum
from dassl_lite.registry import DATASET_REGISTRY

from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class OxfordPets(BenchmarkDataset):
    """``images/<Breed>_<n>.jpg``; the split is built from ``annotations/{trainval,test}.txt``
    (val: 20% of trainval per class). Class names are lower-cased breeds ("american_bulldog")."""

    dataset_dir = "oxford_pets"
    image_dir = "images"
    split_file = "split_zhou_OxfordPets.json"
    split_file_id = "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"
    raw_annotations = ("annotations/trainval.txt", "annotations/test.txt")
    num_classes_expected = 37
    layout = ("oxford_pets/images/*.jpg + oxford_pets/split_zhou_OxfordPets.json "
              "(or oxford_pets/annotations/{trainval,test}.txt to build it)")
    instructions = "see DATASETS.md#oxfordpets"

    def build_split(self):
        trainval = self.read_annotations("annotations/trainval.txt")
        test = self.read_annotations("annotations/test.txt")
        train, val = self.carve_val(trainval)
        return train, val, test

    def read_annotations(self, relpath: str) -> List[Datum]:
        """Items of an annotation list: lines ``<Breed>_<n> <class id 1..37> <species> <breed id>``."""
        items = []
        for number, line in self.read_lines(relpath):
            if line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 4 or not parts[1].isdigit() or "_" not in parts[0]:
                raise self.bad_line(relpath, number, line, "'<Breed>_<n> <class id> <species> <breed id>'")
            breed = parts[0].rsplit("_", 1)[0].lower()
            impath = os.path.join(self.image_dir, parts[0] + ".jpg")
            items.append(Datum(impath=impath, label=int(parts[1]) - 1, classname=breed))
        return items
