"""VTAB-1k: the 19 tasks of the prepared release (and the three toy tasks), one dataset per task.

The prepared release that NOAH, SSF, FacT and most later parameter-efficient papers share holds,
per task (``datasets.vtab_tasks``)::

    <DATASET.ROOT>/vtab-1k/<task>/train800.txt        800 lines "<relpath> <label>"
    <DATASET.ROOT>/vtab-1k/<task>/val200.txt          200 lines
    <DATASET.ROOT>/vtab-1k/<task>/train800val200.txt  the 1000 lines of both
    <DATASET.ROOT>/vtab-1k/<task>/test.txt            the task's full test set
    <DATASET.ROOT>/vtab-1k/<task>/<relpath>           the images (e.g. images/000123.jpg)

``DATASET.VTAB.MODE`` picks the lists (the VPT paper's protocol): ``final`` trains on
``train800val200`` and tests on ``test``; ``tune`` trains on ``train800`` and tests on
``val200``. The val split is empty in both modes (the protocol tunes on ``tune``'s test split).
Every label must be below the task's class count, and the class count is the task's even when a
list misses a class (sun397's 1000 training images cannot hold all 397 classes evenly).

Checks (a :class:`DatasetLayoutError` naming the file, the line and the expected layout): a
missing task folder, list file or image, a malformed line, a label out of range, an image in both
``train800`` and ``val200``, a ``train800val200`` that is not ``train800`` then ``val200`` (the
line count and the labels in order: NOAH's release stores each list's images in its own folder,
``images/<list>/<i>.jpg``, so the paths differ), and
(``final``) an image in both ``train800val200`` and ``test``. ``DATASET.NUM_SHOTS`` (VTAB-1k is
already its 1000-image few-shot setting) and ``DATASET.SUBSAMPLE_CLASSES`` are refused.

Class names (:data:`CLASSNAMES`): tfds' label names for cifar, dtd, oxford_iiit_pet, eurosat and
resisc45 (underscores as spaces), what the label means for svhn, patch_camelyon,
diabetic_retinopathy and clevr_count; ``class_<i>`` for the other tasks (:func:`classnames`).
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Sequence, Tuple

from dassl_lite.config import ConfigError
from dassl_lite.config.validate import check_choice
from dassl_lite.data import Datum, SplitDataset
from dassl_lite.registry import DATASET_REGISTRY

from .toy_vtab import TOY_CLASSNAMES, make_toy_vtab, toy_task_complete
from .vtab_tasks import (FOLDER, LIST_FILES, MODE_LISTS, MODES, TOY_FOLDER, TOY_VTAB_TASKS,
                         VTAB_TASKS, VTabTask, dataset_name)

logger = logging.getLogger(__name__)

__all__ = ["CLASSNAMES", "VTabDataset", "classnames"]

SHOWN = 3  # example lines an error lists

_CIFAR100 = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab
crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard
lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom
oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider
squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout
tulip turtle wardrobe whale willow_tree wolf woman worm"""
_DTD = """banded blotchy braided bubbly bumpy chequered cobwebbed cracked crosshatched crystalline
dotted fibrous flecked freckled frilly gauzy grid grooved honeycombed interlaced knitted lacelike
lined marbled matted meshed paisley perforated pitted pleated polka-dotted porous potholed scaly
smeared spiralled sprinkled stained stratified striped studded swirly veined waffled woven wrinkled
zigzagged"""
_PETS = """Abyssinian american_bulldog american_pit_bull_terrier basset_hound beagle Bengal Birman
Bombay boxer British_Shorthair chihuahua Egyptian_Mau english_cocker_spaniel english_setter
german_shorthaired great_pyrenees havanese japanese_chin keeshond leonberger Maine_Coon
miniature_pinscher newfoundland Persian pomeranian pug Ragdoll Russian_Blue saint_bernard samoyed
scottish_terrier shiba_inu Siamese Sphynx staffordshire_bull_terrier wheaten_terrier
yorkshire_terrier"""
_EUROSAT = """AnnualCrop Forest HerbaceousVegetation Highway Industrial Pasture PermanentCrop
Residential River SeaLake"""
_RESISC45 = """airplane airport baseball_diamond basketball_court beach bridge chaparral church
circular_farmland cloud commercial_area dense_residential desert forest freeway golf_course
ground_track_field harbor industrial_area intersection island lake meadow medium_residential
mobile_home_park mountain overpass palace parking_lot railway railway_station rectangular_farmland
river roundabout runway sea_ice ship snowberg sparse_residential stadium storage_tank tennis_court
terrace thermal_power_station wetland"""


def _words(text: str) -> List[str]:
    return [w.replace("_", " ") for w in text.split()]


# Label -> class name: tfds' label names (in tfds' label order) or what the label means; the
# other tasks' classes are "class_<i>" (see classnames()).
CLASSNAMES: Dict[str, List[str]] = {
    "cifar": _words(_CIFAR100),
    "dtd": _words(_DTD),
    "oxford_iiit_pet": _words(_PETS),
    "svhn": [str(d) for d in range(10)],
    "patch_camelyon": ["no tumor", "tumor"],
    "eurosat": _words(_EUROSAT),
    "resisc45": _words(_RESISC45),
    "diabetic_retinopathy": ["no diabetic retinopathy", "mild", "moderate", "severe",
                             "proliferative"],
    "clevr_count": [f"{n} objects" for n in range(3, 11)],  # VTAB's label: object count - 3
    **TOY_CLASSNAMES,
}
for _task, _names in CLASSNAMES.items():
    _n = {**VTAB_TASKS, **TOY_VTAB_TASKS}[_task].num_classes
    assert len(_names) == _n == len(set(_names)), f"{_task}: {len(_names)} names for {_n} classes"


def classnames(task: str) -> List[str]:
    """The class names of ``task`` by label (``class_<i>`` where none are shipped)."""
    table = VTAB_TASKS.get(task) or TOY_VTAB_TASKS[task]
    return CLASSNAMES.get(task) or [f"class_{i}" for i in range(table.num_classes)]


class VTabDataset(SplitDataset):
    """One VTAB-1k task read from its four list files (see the module docstring)."""

    vtab_task: VTabTask  # set on each generated class
    folder = FOLDER  # vtab-1k (the toy tasks: vtab-1k-toy)
    image_dir = ""  # list paths are relative to the task folder
    has_val = False
    instructions = "see DATASETS.md#vtab-1k"

    def __init__(self, cfg) -> None:
        self.mode = cfg.DATASET.VTAB.MODE
        check_choice("DATASET.VTAB.MODE", self.mode, MODES)
        name = type(self).__name__
        if cfg.DATASET.NUM_SHOTS not in (-1, 0):
            raise ConfigError(
                f"DATASET.NUM_SHOTS={cfg.DATASET.NUM_SHOTS} is not supported by {name}: VTAB-1k is "
                f"already a 1000-image few-shot setting (train800 + val200 per task); set "
                f"DATASET.NUM_SHOTS -1")
        if cfg.DATASET.SUBSAMPLE_CLASSES != "all":
            raise ConfigError(
                f"DATASET.SUBSAMPLE_CLASSES={cfg.DATASET.SUBSAMPLE_CLASSES!r} is not supported by "
                f"{name}: VTAB-1k has no base-to-new protocol; set DATASET.SUBSAMPLE_CLASSES all")
        augment = [t for t in cfg.INPUT.TRANSFORMS if t not in ("normalize",)]
        if augment:
            logger.warning(
                "%s: INPUT.TRANSFORMS has %s; VTAB's pipeline (KMnP/vpt) only resizes to the input "
                "size and normalizes, and a flip or crop changes what the labels of the "
                "Structured tasks mean (position, orientation, distance)", name,
                ", ".join(augment))
        self.prepare(os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT)))
        super().__init__(cfg)
        # the task's class count and names, also when a list misses a class
        names = classnames(self.vtab_task.name)
        self._num_classes = len(names)
        self._lab2cname, self._classnames = dict(enumerate(names)), names

    def prepare(self, root: str) -> None:
        """Make the task's folder first where it can be generated (the toy tasks)."""

    def list_path(self, name: str) -> str:
        return os.path.join(self.dataset_dir, f"{name}.txt")

    # ------------------------------------------------------------------ reading
    def load_split(self) -> Tuple[List[Datum], List[Datum], List[Datum]]:
        missing = [f"{n}.txt" for n in LIST_FILES if not os.path.isfile(self.list_path(n))]
        if missing:
            raise self.layout_error(f"list file {', '.join(missing)} not found in "
                                    f"{self.dataset_dir}")
        train_list, test_list = MODE_LISTS[self.mode]
        lists = {n: self.read_list(n) for n in ("train800", "val200", "train800val200")}
        self._check_train_lists(lists)
        if test_list not in lists:
            lists[test_list] = self.read_list(test_list)
        self.split_source = f"{self.list_path(train_list)} / {test_list}.txt"
        if self.mode == "final":
            self._check_disjoint(lists, "train800val200", "test")
        train, test = (self.items(lists[n]) for n in (train_list, test_list))
        logger.info("%s (DATASET.VTAB.MODE %s): %d train images (%s.txt), %d test images (%s.txt)",
                    type(self).__name__, self.mode, len(train), train_list, len(test), test_list)
        return train, [], test

    def read_list(self, name: str) -> List[Tuple[int, str, int]]:
        """(line number, relpath, label) of list ``name``; every line well formed and every
        image present."""
        path = self.list_path(name)
        n = self.vtab_task.num_classes
        out = []
        with open(path, "r", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                parts = line.rsplit(None, 1)
                ok = len(parts) == 2 and parts[1].lstrip("-").isdigit()
                if not ok or os.path.isabs(parts[0]):
                    raise self.layout_error(f"line {number} of {path} should be '<relpath> "
                                            f"<label>' (a path relative to {self.dataset_dir} and "
                                            f"an integer); got {line!r}")
                label = int(parts[1])
                if not 0 <= label < n:
                    raise self.layout_error(f"line {number} of {path}: label {label} is out of "
                                            f"range for {self.vtab_task.name}'s {n} classes "
                                            f"(0..{n - 1})")
                if not os.path.isfile(os.path.join(self.dataset_dir, parts[0])):
                    raise self.layout_error(f"line {number} of {path}: image "
                                            f"{os.path.join(self.dataset_dir, parts[0])} not found")
                out.append((number, os.path.normpath(parts[0]), label))
        if not out:
            raise self.layout_error(f"{path} lists no images")
        return out

    def items(self, entries: Sequence[Tuple[int, str, int]]) -> List[Datum]:
        names = classnames(self.vtab_task.name)
        return [Datum(impath=os.path.join(self.dataset_dir, rel), label=label,
                      classname=names[label]) for _, rel, label in entries]

    # ------------------------------------------------------------------ checks
    def _check_disjoint(self, lists, a: str, b: str) -> None:
        """An image may be in list ``a`` or ``b``, not both (duplicate paths, any label)."""
        in_a = {rel for _, rel, _ in lists[a]}
        shared = [(number, rel) for number, rel, _ in lists[b] if rel in in_a]
        if shared:
            shown = ", ".join(f"line {n}: {rel}" for n, rel in shared[:SHOWN])
            raise self.layout_error(f"{self.list_path(a)} and {self.list_path(b)} share "
                                    f"{len(shared)} image(s) ({shown} of {b}.txt); an image may "
                                    f"be in {a}.txt or {b}.txt, not both")

    def _check_train_lists(self, lists) -> None:
        """train800 and val200 share no image; train800val200 holds their images in order: the
        same number of lines with train800's labels, then val200's (NOAH's release writes the
        images of each list to its own folder, so the paths differ; the labels may not)."""
        self._check_disjoint(lists, "train800", "val200")
        parts = lists["train800"] + lists["val200"]
        union = lists["train800val200"]
        problem = ""
        for (number, rel, label), (_, part_rel, part_label) in zip(union, parts):
            if label != part_label:
                problem = (f"line {number} ({rel} {label}) has label {label} where "
                           f"train800.txt + val200.txt has {part_rel} {part_label}")
                break
        if len(union) != len(parts):
            problem = f"{len(union)} lines for {len(lists['train800'])} + {len(lists['val200'])}"
        if problem:
            raise self.layout_error(
                f"{self.list_path('train800val200')} must list the images of train800.txt and "
                f"then val200.txt with their labels: {problem}")

    def check_splits(self, train, val, test) -> None:
        """Labels, images and list consistency were checked while reading."""


class ToyVTabDataset(VTabDataset):
    """A toy VTAB task (``datasets.toy_vtab``), generated on first use (seed 0)."""

    folder = TOY_FOLDER
    instructions = ("generated automatically on first use; or run "
                    "`python tools/make_toy_data.py --root DATA --vtab`")

    def prepare(self, root: str) -> None:
        task = self.vtab_task.name
        if not toy_task_complete(os.path.join(root, TOY_FOLDER, task), task):
            logger.info("Toy VTAB task %s not found under %s: generating it (first use)", task, root)
            make_toy_vtab(root, [task])


def expected_layout(folder: str, task: VTabTask) -> str:
    """The layout a task's errors name."""
    where = f"{folder}/{task.name}"
    return (f"{where}/{{{','.join(LIST_FILES)}}}.txt, lines '<relpath> <label>' with "
            f"0 <= label < {task.num_classes}, the images at {where}/<relpath>")


def _register(task: VTabTask, base: type) -> type:
    name = dataset_name(task.name)
    what = "toy VTAB" if base is ToyVTabDataset else "VTAB-1k"
    cls = type(name, (base,), {
        "__doc__": f"The {what} task {task.name} ({task.group}, {task.num_classes} classes).",
        "__module__": __name__, "__qualname__": name, "vtab_task": task,
        "dataset_dir": f"{base.folder}/{task.name}", "num_classes_expected": task.num_classes,
        "layout": expected_layout(base.folder, task)})
    DATASET_REGISTRY.register(cls)
    globals()[name] = cls
    return cls


for _task in VTAB_TASKS.values():
    _register(_task, VTabDataset)
for _task in TOY_VTAB_TASKS.values():
    _register(_task, ToyVTabDataset)
