"""Oxford Flowers-102: 102 flower species (``oxford_flowers/``)."""
from __future__ import annotations

import os
import random
from collections import defaultdict
from typing import Dict, List

from dassl_lite.data import Datum
from dassl_lite.registry import DATASET_REGISTRY

from .benchmark import SPLIT_SEED, BenchmarkDataset, DownloadError, download_from_gdrive

CAT_TO_NAME = "cat_to_name.json"  # {"1": "pink primrose", ...}: CoOp's class names of the labels
CAT_TO_NAME_ID = "1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0"  # its Google Drive id


@DATASET_REGISTRY.register()
class OxfordFlowers(BenchmarkDataset):
    """``jpg/image_<nnnnn>.jpg``; the split is built from ``imagelabels.mat`` (label of image n
    at index n-1) and ``cat_to_name.json``, 50/20/30% per class. Building needs scipy."""

    dataset_dir = "oxford_flowers"
    image_dir = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    split_file_id = "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"
    raw_annotations = ("imagelabels.mat",)
    num_classes_expected = 102
    layout = ("oxford_flowers/jpg/image_<nnnnn>.jpg + oxford_flowers/split_zhou_OxfordFlowers.json "
              "(or oxford_flowers/imagelabels.mat + cat_to_name.json to build it)")
    instructions = "see DATASETS.md#flowers102"

    def build_split(self):
        (labels,) = self.load_mat("imagelabels.mat", "labels")
        names = self.read_cat_to_name()
        groups: Dict[int, List[str]] = defaultdict(list)
        for index, label in enumerate(labels.reshape(-1)):
            groups[int(label)].append(os.path.join(self.image_dir, f"image_{index + 1:05d}.jpg"))
        rng = random.Random(SPLIT_SEED)
        train, val, test = [], [], []
        for label in sorted(groups):
            if str(label) not in names:
                raise self.layout_error(f"{CAT_TO_NAME} has no name for label {label}")
            paths = groups[label]
            rng.shuffle(paths)
            n_train, n_val = round(len(paths) * 0.5), round(len(paths) * 0.2)
            if min(n_train, n_val, len(paths) - n_train - n_val) <= 0:
                raise self.layout_error(f"label {label} has {len(paths)} images in imagelabels.mat: "
                                        "too few for a 50/20/30% split with at least one each")
            for out, part in zip((train, val, test), (paths[:n_train], paths[n_train:n_train + n_val],
                                                      paths[n_train + n_val:])):
                out.extend(Datum(impath=p, label=label - 1, classname=names[str(label)]) for p in part)
        return train, val, test

    def read_cat_to_name(self) -> Dict[str, str]:
        """``cat_to_name.json``, downloaded first when it is missing."""
        path = os.path.join(self.dataset_dir, CAT_TO_NAME)
        if not os.path.isfile(path):
            try:
                download_from_gdrive(CAT_TO_NAME_ID, path)
            except DownloadError as e:
                raise self.layout_error(f"{CAT_TO_NAME} is needed to build {self.split_file}: {e}") from None
        return self.read_json_file(CAT_TO_NAME)
