"""ImageNet-R: renditions (art, cartoons, ...) of 200 ImageNet classes (``imagenet-rendition/``)."""
from __future__ import annotations

from dassl_lite.registry import DATASET_REGISTRY

from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetVariant):
    """``imagenet-r/<wnid>/*.jpg`` for 200 ImageNet classes (labels: sorted wnids; the archive's
    README.txt is ignored). Test only."""

    dataset_dir = "imagenet-rendition"
    image_dir = "imagenet-r"
    num_classes_expected = 200
    num_images_expected = {"imagenet-r": 30000}
    layout = "imagenet-rendition/imagenet-r/<wnid>/*.jpg + imagenet-rendition/classnames.txt"
    instructions = "see DATASETS.md#imagenet-r"
