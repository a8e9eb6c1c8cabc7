"""CUB-200-2011: 200 bird species, as used by VPT's FGVC benchmark, in the layouts users have.

The dataset folder is found without moving files, first match wins:

1. ``<root>/CUB_200_2011/`` (the official archive extracted into ``<root>``);
2. ``<root>/CUB_200_2011/CUB_200_2011/`` (the archive extracted into a folder of the same name);
3. ``<root>/`` itself (``DATASET.ROOT`` pointing at the CUB folder, as KMnP/vpt's DATAPATH does).

A folder qualifies when it has ``images/`` and ``images.txt`` or ``train.json``. The split, first
match wins:

- KMnP/vpt's ``train.json`` + ``val.json`` (+ ``test.json``; without it the official test
  images, with a warning), ``{"<nnn.Class_Name>/<file>.jpg": <class id>}``, as written by
  ``tools/convert_cub.py`` or the VPT code (see ``datasets/fgvc_json.py`` for the paths
  accepted). Any one of the three files present means the JSON files define the split: a missing
  ``train.json`` or ``val.json`` is then an error, never a silent fall back to the official split;
- ``split_zhou_CUB200.json``;
- built from the official files (``images.txt``, ``image_class_labels.txt``,
  ``train_test_split.txt``, ``classes.txt``): the official train/test split, with 10% of each
  class's train images carved out (seeded) for val, and saved as ``split_zhou_CUB200.json``.

Class names are the folder names without their number ("Black_footed_Albatross").
"""
from __future__ import annotations

import os
from typing import Dict, List, Tuple

from dassl_lite.data import Datum
from dassl_lite.registry import DATASET_REGISTRY

from .fgvc_json import VPTJsonSplits, has_vpt_json

__all__ = ["CUB200", "ANNOTATIONS", "P_VAL", "find_cub_dir", "official_items"]

ANNOTATIONS = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
P_VAL = 0.1  # share of the official train images per class kept for val (VPT: 90/10)
FOLDER = "CUB_200_2011"


def find_cub_dir(root: str) -> str:
    """The CUB folder under ``root`` (module docstring); ``root/CUB_200_2011`` when none fits."""
    candidates = [os.path.join(root, FOLDER), os.path.join(root, FOLDER, FOLDER), root]
    for folder in candidates:
        if os.path.isdir(os.path.join(folder, "images")) and (
                os.path.isfile(os.path.join(folder, "images.txt")) or has_vpt_json(folder)):
            return folder
    return candidates[0]


def _read_id_map(folder: str, relpath: str, error) -> Dict[str, str]:
    """``{id: value}`` of a file of lines ``<id> <value>``; ``error(msg)`` builds the exception."""
    path = os.path.join(folder, relpath)
    if not os.path.isfile(path):
        raise error(f"annotation file not found: {path}")
    mapping = {}
    with open(path, "r", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            key, _, value = line.partition(" ")
            if not key.isdigit() or not value.strip():
                raise error(f"line {number} of {path} should be '<id> <value>'; got {line!r}")
            mapping[key] = value.strip()
    return mapping


Row = Tuple[str, int, str]  # (path under images/, class id (1-based), class folder name)


def official_items(folder: str, error=ValueError) -> Tuple[List[Row], List[Row]]:
    """(official train, official test) of a CUB folder as ``(path under images/, class id
    (1-based), class folder name)``, in ``images.txt`` order."""
    images, labels, is_train, classes = (_read_id_map(folder, name, error) for name in ANNOTATIONS)
    train, test = [], []
    for image_id, relpath in images.items():
        if image_id not in labels or image_id not in is_train:
            raise error(f"image id {image_id} ({relpath}) has no entry in "
                        "image_class_labels.txt or train_test_split.txt")
        class_id = labels[image_id]
        if class_id not in classes:
            raise error(f"class id {class_id} of image {relpath} is not in classes.txt")
        row = (relpath, int(class_id), classes[class_id])
        (train if is_train[image_id] == "1" else test).append(row)
    return train, test


def class_name(folder_name: str) -> str:
    """"001.Black_footed_Albatross" -> "Black_footed_Albatross"."""
    return folder_name.partition(".")[2] or folder_name


@DATASET_REGISTRY.register()
class CUB200(VPTJsonSplits):
    """CUB-200-2011 in its official, doubled-folder or VPT-JSON layout (module docstring)."""

    dataset_dir = FOLDER
    image_dir = "images"
    split_file = "split_zhou_CUB200.json"
    raw_annotations = ANNOTATIONS
    num_classes_expected = 200
    layout = ("CUB_200_2011/images/<nnn.Class_Name>/*.jpg + CUB_200_2011/{images,"
              "image_class_labels,train_test_split,classes}.txt or CUB_200_2011/{train,val}.json "
              "(CUB_200_2011/CUB_200_2011/... and DATASET.ROOT at the CUB folder are found too)")
    instructions = "see DATASETS.md#cub200"
    json_hint = ("add the missing file (`python tools/convert_cub.py --root DATASET.ROOT --out "
                 "NEW_FOLDER` writes all three from the official files), or remove the JSON "
                 "files to use the official split")
    fallback_test_source = "the official test split (train_test_split.txt)"

    def find_dataset_dir(self, root: str) -> str:
        return find_cub_dir(root)

    def load_split(self):
        if has_vpt_json(self.dataset_dir):
            return self.read_vpt_json()
        return super(VPTJsonSplits, self).load_split()

    def build_split(self):
        official, test = official_items(self.dataset_dir, self.layout_error)
        train, val = self.carve_val(self._items(official), p_val=P_VAL)
        return train, val, self._items(test)

    def _items(self, rows) -> List[Datum]:
        return [Datum(impath=os.path.join(self.image_dir, *rel.split("/")), label=cid - 1,
                      classname=class_name(name)) for rel, cid, name in rows]

    def fallback_test(self, trainval: List[Datum]) -> List[Datum]:
        """The official test images, labelled by class name as the JSON split labels them
        (its ids may start at 0 or 1)."""
        label_of = {item.classname: item.label for item in trainval}
        _, test = official_items(self.dataset_dir, self.layout_error)
        unknown = sorted({class_name(name) for _, _, name in test} - set(label_of))
        if unknown:
            raise self.layout_error(f"official test images of classes {unknown[:5]} that the "
                                    "JSON split files do not have")
        return [Datum(impath=item.impath, label=label_of[item.classname], classname=item.classname)
                for item in self._items(test)]

    def classname_for(self, class_id: int, relpath: str) -> str:
        return class_name(super().classname_for(class_id, relpath))
