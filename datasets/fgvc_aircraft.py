"""FGVC-Aircraft (2013b): 100 aircraft model variants (``fgvc_aircraft/``)."""
from __future__ import annotations

import os
from typing import Dict, List

from dassl_lite.data import Datum
from dassl_lite.registry import DATASET_REGISTRY

from .benchmark import BenchmarkDataset

SPLITS = ("train", "val", "test")


@DATASET_REGISTRY.register()
class FGVCAircraft(BenchmarkDataset):
    """The ``data/`` folder of the archive: ``images/<id>.jpg``, ``variants.txt`` (class names,
    label = line order) and the official split lists ``images_variant_{train,val,test}.txt``
    (lines ``<id> <variant>``), read on every run as upstream does (there is no split file)."""

    dataset_dir = "fgvc_aircraft"
    image_dir = "images"
    split_file = ""
    num_classes_expected = 100
    layout = ("fgvc_aircraft/images/<id>.jpg + fgvc_aircraft/variants.txt + "
              "fgvc_aircraft/images_variant_{train,val,test}.txt")
    instructions = "see DATASETS.md#fgvcaircraft"

    def build_split(self):
        variants = [line for _, line in self.read_lines("variants.txt")]
        label_of = {name: label for label, name in enumerate(variants)}
        train, val, test = (self.read_list(f"images_variant_{s}.txt", label_of) for s in SPLITS)
        return train, val, test

    def read_list(self, relpath: str, label_of: Dict[str, int]) -> List[Datum]:
        """Items of a split list; the variant may contain spaces ("Cessna 172")."""
        items = []
        for number, line in self.read_lines(relpath):
            image_id, _, variant = line.partition(" ")
            if variant not in label_of:
                raise self.bad_line(relpath, number, line, "'<image id> <variant from variants.txt>'")
            impath = os.path.join(self.image_dir, image_id + ".jpg")
            items.append(Datum(impath=impath, label=label_of[variant], classname=variant))
        return items
