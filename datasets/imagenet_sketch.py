"""ImageNet-Sketch: sketches of the 1000 ImageNet classes (``imagenet-sketch/``)."""
from __future__ import annotations

from dassl_lite.registry import DATASET_REGISTRY

from .imagenet import NUM_IMAGENET_CLASSES, ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetSketch(ImageNetVariant):
    """``images/<wnid>/*.JPEG`` for all 1000 ImageNet classes. Test only."""

    dataset_dir = "imagenet-sketch"
    image_dir = "images"
    num_classes_expected = NUM_IMAGENET_CLASSES
    num_images_expected = {"images": 50889}
    layout = "imagenet-sketch/images/<wnid>/*.JPEG + imagenet-sketch/classnames.txt"
    instructions = "see DATASETS.md#imagenet-sketch"

    def classes(self, classnames):
        self.check_folder_names(self.image_dir, self.class_folders(self.image_dir), sorted(classnames))
        return super().classes(classnames)
