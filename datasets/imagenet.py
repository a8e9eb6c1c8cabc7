"""ImageNet (ILSVRC-2012, 1000 classes, ``imagenet/``) and the folder indexing its variants share.

The index is rebuilt on every run instead of being cached (upstream pickles it to
``preprocessed.pkl``): each class folder is listed once and no file is stat-ed, which takes
seconds for the 1.28M training images and never goes stale. Labels follow the sorted WordNet ids
(as upstream, whose labels are the sorted train folders); class names come from ``classnames.txt``.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple

from dassl_lite.data import Datum
from dassl_lite.registry import DATASET_REGISTRY

from .benchmark import BenchmarkDataset, DownloadError, download_from_gdrive

logger = logging.getLogger(__name__)

CLASSNAMES_FILE = "classnames.txt"  # lines "<wnid> <class name>", CLIP's names, sorted by wnid
CLASSNAMES_ID = "1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF"  # its Google Drive id (CoOp's copy)
NUM_IMAGENET_CLASSES = 1000


def read_classnames(path: str) -> "OrderedDict[str, str]":
    """``{wnid: class name}`` of a ``classnames.txt`` in file order; ValueError on a bad line."""
    classnames: "OrderedDict[str, str]" = OrderedDict()
    with open(path, "r", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            wnid, _, name = line.strip().partition(" ")
            if not wnid:
                continue
            if not name.strip():
                raise ValueError(f"line {number} of {path} should be '<wnid> <class name>'; got {line!r}")
            classnames[wnid] = name.strip()
    return classnames


def list_folder(path: str) -> Tuple[List[str], List[str]]:
    """(sub-folders, other entries) of ``path``, sorted, hidden ones skipped (one listing; the
    entry type comes from the listing, so files are not stat-ed)."""
    folders, others = [], []
    with os.scandir(path) as entries:
        for entry in entries:
            if not entry.name.startswith("."):
                (folders if entry.is_dir() else others).append(entry.name)
    return sorted(folders), sorted(others)


def list_images(path: str) -> List[str]:
    """Sorted non-hidden entry names of a class folder (one listing, no stat)."""
    return sorted(name for name in os.listdir(path) if not name.startswith("."))


class ImageNetFamily(BenchmarkDataset):
    """ImageNet-style folders of classes, indexed without a split file; classes named by
    ``classnames.txt`` (downloaded when missing)."""

    split_file = ""
    has_val = False
    num_images_expected: Dict[str, int] = {}  # folder name -> images in the official release

    def load_classnames(self) -> "OrderedDict[str, str]":
        """``{wnid: class name}`` from the first ``classnames.txt`` found (see :meth:`classnames_paths`)."""
        paths = self.classnames_paths()
        found = [p for p in paths if os.path.isfile(p)]
        if not found:
            try:
                found = [download_from_gdrive(CLASSNAMES_ID, paths[0])]
            except DownloadError as e:
                raise self.layout_error(f"{CLASSNAMES_FILE} not found at {' or '.join(paths)}; {e}") from None
        try:
            classnames = read_classnames(found[0])
        except ValueError as e:
            raise self.layout_error(str(e)) from None
        if len(classnames) != NUM_IMAGENET_CLASSES:
            raise self.layout_error(f"{found[0]} should name {NUM_IMAGENET_CLASSES} classes; it names "
                                    f"{len(classnames)}")
        return classnames

    def classnames_paths(self) -> List[str]:
        """Where ``classnames.txt`` is looked for; the first is where a download goes."""
        return [os.path.join(self.dataset_dir, CLASSNAMES_FILE)]

    def class_folders(self, directory: str) -> List[str]:
        """Sorted class folder names of ``directory``; a layout error when there are none."""
        if not os.path.isdir(directory):
            raise self.layout_error(f"folder not found: {directory}")
        folders, others = list_folder(directory)
        if not folders:
            hint = (f" but {len(others)} other entries (e.g. {others[0]!r}): images must sit in "
                    "one folder per class" if others else "")
            raise self.layout_error(f"{directory} holds no class folders{hint}")
        return folders

    def check_folder_names(self, directory: str, found: Sequence[str], expected: Sequence[str]) -> None:
        """A layout error naming the class folders missing from or unexpected in ``directory``."""
        missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        if missing or unexpected:
            raise self.layout_error(
                f"{directory} should hold the {len(expected)} class folders named by "
                f"{CLASSNAMES_FILE}; {len(missing)} missing {missing[:10]}, {len(unexpected)} "
                f"unexpected {unexpected[:10]}"
            )

    def index(self, directory: str, classes: Sequence[Tuple[str, str]]) -> List[Datum]:
        """Items of ``directory/<folder>/*`` for ``classes`` = [(folder, class name)] in label order."""
        items, empty = [], []
        for label, (folder, classname) in enumerate(classes):
            class_dir = os.path.join(directory, folder)
            names = list_images(class_dir)
            if not names:
                empty.append(folder)
            items.extend(Datum(os.path.join(class_dir, name), label, 0, classname) for name in names)
        if empty:
            raise self.layout_error(f"{len(empty)} class folders of {directory} are empty: {empty[:10]}")
        expected = type(self).num_images_expected.get(os.path.basename(directory))
        if expected is not None and len(items) != expected:
            logger.warning("%s holds %d images; the official release has %d (incomplete copy?)",
                           directory, len(items), expected)
        return items


@DATASET_REGISTRY.register()
class ImageNet(ImageNetFamily):
    """``images/train/<wnid>/*`` (training) and ``images/val/<wnid>/*`` (the official validation
    images, used as the test split as upstream does). There is no val split, so model selection
    on val (TEST.FINAL_MODEL best_val) is refused instead of silently using the test images."""

    dataset_dir = "imagenet"
    image_dir = "images"
    num_classes_expected = NUM_IMAGENET_CLASSES
    num_images_expected = {"train": 1281167, "val": 50000}
    layout = "imagenet/images/{train,val}/<wnid>/*.JPEG + imagenet/classnames.txt"
    instructions = "see DATASETS.md#imagenet"
    read_classnames = staticmethod(read_classnames)  # upstream: ImageNet.read_classnames(path)

    def build_split(self):
        classnames = self.load_classnames()
        classes = [(wnid, classnames[wnid]) for wnid in sorted(classnames)]
        splits = []
        for folder in ("train", "val"):
            directory = os.path.join(self.image_dir, folder)
            self.check_folder_names(directory, self.class_folders(directory), sorted(classnames))
            splits.append(self.index(directory, classes))
        train, test = splits
        logger.info("Indexed ImageNet: %d train and %d test (val folder) images", len(train), len(test))
        return train, [], test


class ImageNetVariant(ImageNetFamily):
    """A test-only dataset with ImageNet's class names (train = test = all images, as upstream;
    DATASET.NUM_SHOTS is not applied). ``classnames.txt`` may also be left in ``imagenet/``."""

    def classnames_paths(self) -> List[str]:
        sibling = os.path.join(os.path.dirname(self.dataset_dir), ImageNet.dataset_dir, CLASSNAMES_FILE)
        return [os.path.join(self.dataset_dir, CLASSNAMES_FILE), sibling]

    def build_split(self):
        data = self.index(self.image_dir, self.classes(self.load_classnames()))
        return data, [], data

    def classes(self, classnames: "OrderedDict[str, str]") -> List[Tuple[str, str]]:
        """[(folder, class name)] in label order: by default the sorted wnid folders present."""
        folders = self.class_folders(self.image_dir)
        unknown = [f for f in folders if f not in classnames]
        if unknown:
            raise self.layout_error(f"class folders of {self.image_dir} not named in {CLASSNAMES_FILE}: "
                                    f"{unknown[:10]} ({len(unknown)} in all)")
        return [(wnid, classnames[wnid]) for wnid in folders]

    def sample_fewshot(self, train, val, num_shots: int, seed: int):
        if num_shots >= 1:
            logger.info("%s is a test-only dataset: DATASET.NUM_SHOTS=%d is not applied",
                        type(self).__name__, num_shots)
        return train, val
