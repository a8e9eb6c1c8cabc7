"""The split files of KMnP/vpt's FGVC benchmark: ``train.json``, ``val.json`` (and ``test.json``),
each a mapping ``{"<image path>": <class id>}``, beside the dataset's images.

:class:`VPTJsonSplits` reads them for any dataset; class ids become contiguous labels in sorted id
order over all splits (the reference maps each split on its own, which mislabels a split that
lacks a class). Image paths may be relative to the image folder (VPT's), start with the image
folder's name, use Windows separators, or be absolute paths of another machine: everything up to
the last component equal to the image folder's name is dropped.

Registered datasets that read only these files (their folders as the VPT code expects them):
``NABirds`` (``nabirds/images/``), ``StanfordDogs`` (``stanford_dogs/Images/``), and for the VPT
copies of Flowers and Cars ``OxfordFlowersVPT`` (``oxford_flowers/``) and ``StanfordCarsVPT``
(``stanford_cars/``), whose paths are relative to the dataset folder. ``CUB200`` reads them too
when present (see ``datasets/cub200.py``).
"""
from __future__ import annotations

import logging
import os
import re
from collections import Counter
from typing import Dict, List, Optional, Tuple

from dassl_lite.data import Datum
from dassl_lite.registry import DATASET_REGISTRY

from .benchmark import BenchmarkDataset

logger = logging.getLogger(__name__)

__all__ = ["VPTJsonSplits", "VPT_SPLIT_FILES", "has_vpt_json", "NABirds", "StanfordDogs",
           "OxfordFlowersVPT", "StanfordCarsVPT"]

VPT_SPLIT_FILES = ("train.json", "val.json", "test.json")
SHOWN = 3  # shared or repeated images a message lists


def vpt_json_files(folder: str) -> List[str]:
    """The VPT split files (:data:`VPT_SPLIT_FILES`) present in ``folder``."""
    return [f for f in VPT_SPLIT_FILES if os.path.isfile(os.path.join(folder, f))]


def has_vpt_json(folder: str) -> bool:
    """True when ``folder`` holds any of VPT's split files (then they define the split, and
    ``train.json`` and ``val.json`` must both be there)."""
    return bool(vpt_json_files(folder))


class VPTJsonSplits(BenchmarkDataset):
    """A dataset whose split comes from VPT's ``train.json`` / ``val.json`` / ``test.json``.

    ``train.json`` and ``val.json`` are required; an image may not be in both ``train.json`` and
    the test split (an error naming both files and a few shared images); ``train.json`` sharing
    images with ``val.json`` is allowed with a warning (val then measures training images).
    Subclasses may override :meth:`classname_for` (default: the image's folder name) and
    :meth:`fallback_test` (default: none; ``test.json`` is then required)."""

    split_file = ""  # no split_zhou file: the JSON files are the split
    json_hint = ""  # how to fix a partial set of JSON files (appended to the error)

    def load_split(self):
        return self.read_vpt_json()

    def read_vpt_json(self) -> Tuple[List[Datum], List[Datum], List[Datum]]:
        """(train, val, test) from the JSON files (test from :meth:`fallback_test` when
        ``test.json`` is absent)."""
        self._require_json()
        self.split_source = os.path.join(self.dataset_dir, "train.json / val.json")
        maps = {name: self._read_map(f"{name}.json") for name in ("train", "val")}
        if os.path.isfile(os.path.join(self.dataset_dir, "test.json")):
            maps["test"] = self._read_map("test.json")
        ids = sorted({cid for m in maps.values() for cid in m.values()})
        label_of = {cid: i for i, cid in enumerate(ids)}
        splits = {name: self._json_items(m, label_of, f"{name}.json") for name, m in maps.items()}
        sources = {name: os.path.join(self.dataset_dir, f"{name}.json") for name in maps}
        if "test" not in splits:
            test = self.fallback_test(splits["train"] + splits["val"])
            if test is None:
                raise self.layout_error(f"test.json not found in {self.dataset_dir}")
            splits["test"], sources["test"] = test, self.fallback_test_source
            logger.warning("%s: no test.json in %s; testing on %s (%d images)",
                           type(self).__name__, self.dataset_dir, self.fallback_test_source,
                           len(test))
        self._check_disjoint(splits, sources)
        logger.info("%s: split from KMnP/vpt's JSON files in %s (%d classes)",
                    type(self).__name__, self.dataset_dir, len(ids))
        return splits["train"], splits["val"], splits["test"]

    def _require_json(self) -> None:
        """A layout error naming ``train.json``/``val.json`` when either is missing."""
        present = vpt_json_files(self.dataset_dir)
        missing = [f for f in VPT_SPLIT_FILES[:2] if f not in present]
        if missing:
            found = f"found only {', '.join(present)}" if present else "found none of them"
            hint = f"; {self.json_hint}" if self.json_hint else ""
            test = (f" (test.json optional: else {self.fallback_test_source})"
                    if self.fallback_test_source else ", plus test.json")
            raise self.layout_error(
                f"split file {' and '.join(missing)} not found in {self.dataset_dir} ({found}): "
                f"KMnP/vpt's split needs train.json and val.json{test}{hint}")

    def _check_disjoint(self, splits: Dict[str, List[Datum]], sources: Dict[str, str]) -> None:
        """Train and test must not share an image (error); train and val should not (warning)."""
        train = {os.path.normpath(d.impath) for d in splits["train"]}
        for name in ("test", "val"):
            shared = sorted({os.path.normpath(d.impath) for d in splits[name]} & train)
            if not shared:
                continue
            examples = ", ".join(os.path.relpath(p, self.image_dir) for p in shared[:SHOWN])
            problem = (f"{sources['train']} and {sources[name]} share {len(shared)} image(s), "
                       f"e.g. {examples}")
            if name == "test":
                raise self.layout_error(f"{problem}; an image may be in the train or the test "
                                        "split, not both")
            logger.warning("%s: %s; validation accuracy then counts training images",
                           type(self).__name__, problem)

    fallback_test_source = ""  # what :meth:`fallback_test` reads, for messages

    def fallback_test(self, trainval: List[Datum]) -> Optional[List[Datum]]:
        """Test items when there is no ``test.json``, labelled as ``trainval`` (None: it is
        required)."""
        return None

    def classname_for(self, class_id: int, relpath: str) -> str:
        """The class name of an image: its folder's name (or ``class_<id>`` without one)."""
        folder = relpath.rpartition("/")[0].rpartition("/")[2]
        return folder or f"class_{class_id}"

    def image_relpath(self, key: str) -> str:
        """``key`` as a '/'-separated path relative to the image folder (module docstring)."""
        parts = [p for p in re.split(r"[\\/]+", key) if p and p != "."]
        anchor = os.path.basename(os.path.normpath(self.image_dir))
        if os.path.normpath(self.image_dir) != os.path.normpath(self.dataset_dir):
            hits = [i for i, p in enumerate(parts[:-1]) if p == anchor]
            if hits:
                parts = parts[hits[-1] + 1:]
        elif len(parts) > 1 and (":" in parts[0] or key.startswith(("/", "\\"))):
            raise self.layout_error(f"image path {key!r} in the JSON split is absolute; it must "
                                    f"be relative to {self.dataset_dir}")
        return "/".join(parts)

    def _json_items(self, mapping: Dict[str, int], label_of: Dict[int, int],
                    relpath: str) -> List[Datum]:
        """The items of one JSON file; an image listed twice (two spellings) is an error."""
        items, seen = [], {}
        for key, class_id in mapping.items():
            rel = self.image_relpath(key)
            if rel in seen:
                raise self.layout_error(
                    f"{os.path.join(self.dataset_dir, relpath)} lists the image {rel} twice "
                    f"(as {seen[rel]!r} and {key!r})")
            seen[rel] = key
            items.append(Datum(impath=os.path.join(self.image_dir, *rel.split("/")),
                               label=label_of[class_id],
                               classname=self.classname_for(class_id, rel)))
        return items

    def _read_map(self, relpath: str) -> Dict[str, int]:
        path = os.path.join(self.dataset_dir, relpath)
        repeated: List[str] = []

        def as_dict(pairs):  # json.load keeps the last of repeated keys without a word
            out = dict(pairs)
            if len(out) < len(pairs):
                repeated.extend(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
            return out

        data = self.read_json_file(relpath, object_pairs_hook=as_dict)
        if not isinstance(data, dict) or not data:
            got = "an empty mapping" if isinstance(data, dict) else type(data).__name__
            raise self.layout_error(f"{path} must map image paths to class ids "
                                    f"({{\"<image path>\": <class id>}}); got {got}")
        if repeated:
            raise self.layout_error(f"{path} lists {', '.join(map(repr, repeated[:SHOWN]))} more "
                                    "than once")
        out = {}
        for key, value in data.items():
            if isinstance(value, bool) or not str(value).strip().lstrip("-").isdigit():
                raise self.layout_error(f"{path}: class id of {key!r} must be an integer; "
                                        f"got {value!r}")
            out[key] = int(value)
        return out


@DATASET_REGISTRY.register()
class NABirds(VPTJsonSplits):
    """NABirds (555 classes) as KMnP/vpt reads it: ``nabirds/images/<class id>/*.jpg`` and the
    JSON split files; class names from ``classes.txt`` ("<id> <name>") when present."""

    dataset_dir = "nabirds"
    image_dir = "images"
    num_classes_expected = 555
    layout = "nabirds/images/<class>/*.jpg + nabirds/{train,val,test}.json"
    instructions = "see DATASETS.md#vpt-json-splits"

    def classname_for(self, class_id: int, relpath: str) -> str:
        if not hasattr(self, "_names"):
            path = os.path.join(self.dataset_dir, "classes.txt")
            self._names = {}
            if os.path.isfile(path):
                for _, line in self.read_lines("classes.txt"):
                    key, _, name = line.partition(" ")
                    if key.isdigit():
                        self._names[int(key)] = name.strip()
        return self._names.get(class_id) or super().classname_for(class_id, relpath)


@DATASET_REGISTRY.register()
class StanfordDogs(VPTJsonSplits):
    """Stanford Dogs (120 classes): ``stanford_dogs/Images/n<wnid>-<Breed>/*.jpg`` and the JSON
    split files; class names are the breed part of the folder name."""

    dataset_dir = "stanford_dogs"
    image_dir = "Images"
    num_classes_expected = 120
    layout = "stanford_dogs/Images/n<wnid>-<Breed>/*.jpg + stanford_dogs/{train,val,test}.json"
    instructions = "see DATASETS.md#vpt-json-splits"

    def classname_for(self, class_id: int, relpath: str) -> str:
        folder = super().classname_for(class_id, relpath)
        return folder.partition("-")[2] or folder


@DATASET_REGISTRY.register()
class OxfordFlowersVPT(VPTJsonSplits):
    """Oxford Flowers (102 classes) with KMnP/vpt's JSON split files in ``oxford_flowers/``
    (paths relative to it, e.g. ``jpg/image_00001.jpg``)."""

    dataset_dir = "oxford_flowers"
    image_dir = ""
    num_classes_expected = 102
    layout = "oxford_flowers/<images> + oxford_flowers/{train,val,test}.json"
    instructions = "see DATASETS.md#vpt-json-splits"

    def classname_for(self, class_id: int, relpath: str) -> str:
        return f"class_{class_id}"


@DATASET_REGISTRY.register()
class StanfordCarsVPT(OxfordFlowersVPT):
    """Stanford Cars (196 classes) with KMnP/vpt's JSON split files in ``stanford_cars/``
    (paths relative to it)."""

    dataset_dir = "stanford_cars"
    num_classes_expected = 196
    layout = "stanford_cars/<images> + stanford_cars/{train,val,test}.json"
