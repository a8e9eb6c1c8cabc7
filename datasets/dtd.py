"""Describable Textures (DTD): 47 texture classes (``dtd/``)."""
from __future__ import annotations

from dassl_lite.registry import DATASET_REGISTRY

from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class DescribableTextures(BenchmarkDataset):
    """``images/<texture>/*.jpg``; the split is built from the class folders (50/20/30% per class)."""

    dataset_dir = "dtd"
    image_dir = "images"
    split_file = "split_zhou_DescribableTextures.json"
    split_file_id = "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"
    num_classes_expected = 47
    layout = "dtd/images/<texture>/*.jpg + dtd/split_zhou_DescribableTextures.json"
    instructions = "see DATASETS.md#dtd"

    def build_split(self):
        return self.split_class_folders()


DATASET_REGISTRY.register(DescribableTextures, name="DTD")  # short alias; configs use the upstream name
