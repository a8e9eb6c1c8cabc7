"""Food-101: 101 dishes (``food-101/``)."""
from __future__ import annotations

from dassl_lite.registry import DATASET_REGISTRY

from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class Food101(BenchmarkDataset):
    """``images/<dish>/*.jpg``; the split is built from the class folders (50/20/30% per class;
    like upstream it ignores the official ``meta/train.txt``/``meta/test.txt``)."""

    dataset_dir = "food-101"
    image_dir = "images"
    split_file = "split_zhou_Food101.json"
    split_file_id = "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl"
    num_classes_expected = 101
    layout = "food-101/images/<dish>/*.jpg + food-101/split_zhou_Food101.json"
    instructions = "see DATASETS.md#food101"

    def build_split(self):
        return self.split_class_folders()
