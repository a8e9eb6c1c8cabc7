"""ImageNetV2 (matched frequency): 10 new test images for each ImageNet class (``imagenetv2/``)."""
from __future__ import annotations

from dassl_lite.registry import DATASET_REGISTRY

from .imagenet import NUM_IMAGENET_CLASSES, ImageNetVariant

IMAGE_DIR = "imagenetv2-matched-frequency-format-val"


@DATASET_REGISTRY.register()
class ImageNetV2(ImageNetVariant):
    """``imagenetv2-matched-frequency-format-val/<0..999>/*.jpeg``: folder ``i`` holds ImageNet
    class ``i``, named by line ``i`` of ``classnames.txt``. Test only."""

    dataset_dir = "imagenetv2"
    image_dir = IMAGE_DIR
    num_classes_expected = NUM_IMAGENET_CLASSES
    num_images_expected = {IMAGE_DIR: 10000}
    layout = f"imagenetv2/{IMAGE_DIR}/<0..999>/*.jpeg + imagenetv2/classnames.txt"
    instructions = "see DATASETS.md#imagenetv2"

    def classes(self, classnames):
        folders = [str(label) for label in range(NUM_IMAGENET_CLASSES)]
        self.check_folder_names(self.image_dir, self.class_folders(self.image_dir), folders)
        return list(zip(folders, classnames.values()))
