"""ImageNet-A: natural adversarial examples of 200 ImageNet classes (``imagenet-adversarial/``)."""
from __future__ import annotations

from dassl_lite.registry import DATASET_REGISTRY

from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetVariant):
    """``imagenet-a/<wnid>/*.jpg`` for 200 ImageNet classes (labels: sorted wnids; the archive's
    README.txt is ignored). Test only."""

    dataset_dir = "imagenet-adversarial"
    image_dir = "imagenet-a"
    num_classes_expected = 200
    num_images_expected = {"imagenet-a": 7500}
    layout = "imagenet-adversarial/imagenet-a/<wnid>/*.jpg + imagenet-adversarial/classnames.txt"
    instructions = "see DATASETS.md#imagenet-a"
