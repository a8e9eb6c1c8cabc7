"""Caltech-101: 100 object classes (``caltech-101/``), without the background and easy-faces folders."""
from __future__ import annotations

from dassl_lite.registry import DATASET_REGISTRY

from .benchmark import BenchmarkDataset

IGNORED = ("BACKGROUND_Google", "Faces_easy")  # not object classes
# Folder name -> class name used in prompts (upstream's renames).
NEW_CNAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


@DATASET_REGISTRY.register()
class Caltech101(BenchmarkDataset):
    """``101_ObjectCategories/<class>/*.jpg``; the split is built from the class folders
    (50/20/30% per class) without :data:`IGNORED`, renamed by :data:`NEW_CNAMES`."""

    dataset_dir = "caltech-101"
    image_dir = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    split_file_id = "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"
    num_classes_expected = 100
    layout = ("caltech-101/101_ObjectCategories/<class>/*.jpg + "
              "caltech-101/split_zhou_Caltech101.json")
    instructions = "see DATASETS.md#caltech101"

    def build_split(self):
        return self.split_class_folders(ignored=IGNORED, new_cnames=NEW_CNAMES)
