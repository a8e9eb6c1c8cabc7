"""Which YAML files a protocol runs: dataset configs by stem, registered name or path; the
benchmarks' dataset lists; trainer configs by path or by name under ``configs/trainers/<T>/``."""
from __future__ import annotations

import difflib
import glob
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Sequence

from ..config.bundled import find_config, trainer_config_folders
from ..errors import DasslLiteError
from ..utils.io import load_yaml

logger = logging.getLogger(__name__)

# Dataset config stems (configs/datasets/<stem>.yaml) of each named benchmark.
BENCHMARKS: Dict[str, List[str]] = {
    # the 11 datasets of CoOp/CoCoOp/MaPLe base-to-novel, few-shot and cross-dataset tables
    "papers": ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers",
               "food101", "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101"],
    # domain generalization: source ImageNet, targets its four variants
    "papers_dg": ["imagenet", "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"],
    # the embedded toy world: same 64 classes in three rendering domains
    "toy": ["toy_shapes", "toy_textures", "toy_sketch"],
    "toy_dg": ["toy_shapes", "toy_textures", "toy_sketch"],
}


@dataclass(frozen=True)
class DatasetConfig:
    """A dataset config file: ``label`` (file stem, used in output paths), ``path``, ``name``
    (its ``DATASET.NAME``)."""

    label: str
    path: str
    name: str


def _read_dataset_name(path: str) -> str:
    with open(path) as f:
        data = load_yaml(f) or {}
    return str((data.get("DATASET") or {}).get("NAME", ""))


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _catalogue(config_dir: str) -> List[DatasetConfig]:
    paths = sorted(glob.glob(os.path.join(config_dir, "*.yaml")))
    return [DatasetConfig(_stem(p), p, _read_dataset_name(p)) for p in paths]


def resolve_dataset(spec: str, config_dir: str) -> DatasetConfig:
    """``spec`` is a YAML path, a file stem in ``config_dir`` (``oxford_pets``) or a registered
    dataset name (``OxfordPets``, matched against the files' ``DATASET.NAME``)."""
    if spec.endswith((".yaml", ".yml")) or os.sep in spec:
        path = _config_path(spec, "Dataset config")
        return DatasetConfig(_stem(path), os.path.abspath(path), _read_dataset_name(path))
    catalogue = _catalogue(config_dir)
    for entry in catalogue:
        if spec in (entry.label, entry.name):
            return entry
    names = [e.label for e in catalogue] + [e.name for e in catalogue if e.name]
    close = difflib.get_close_matches(spec, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    known = ", ".join(f"{e.label} ({e.name})" for e in catalogue) or "none"
    raise DasslLiteError(
        f"No dataset config for {spec!r} in {config_dir}: expected a file stem or a DATASET.NAME "
        f"of its *.yaml files, or a path to a YAML file.{hint} Known: {known}"
    )


def benchmark_datasets(benchmark: str) -> List[str]:
    """The dataset stems of ``benchmark``."""
    if benchmark not in BENCHMARKS:
        raise DasslLiteError(f"--benchmark must be one of {', '.join(BENCHMARKS)}; "
                             f"got {benchmark!r}")
    return list(BENCHMARKS[benchmark])


def resolve_datasets(specs: Sequence[str], benchmark: str, config_dir: str) -> List[DatasetConfig]:
    """Resolve ``specs`` (``all`` = every dataset of ``benchmark``), keeping order, no repeats."""
    expanded: List[str] = []
    for spec in specs:
        expanded += benchmark_datasets(benchmark) if spec == "all" else [spec]
    resolved: List[DatasetConfig] = []
    for spec in expanded:
        entry = resolve_dataset(spec, config_dir)
        if entry not in resolved:
            resolved.append(entry)
    return resolved


def resolve_trainer_config(spec: str, trainer: str, config_dir: str) -> str:
    """``spec`` is a YAML path or a config name under ``config_dir/<trainer>/`` (``vit_b16``), or
    under the folder of a registered trainer that ``trainer`` subclasses."""
    if os.path.isfile(spec) or os.sep in spec or "/" in spec:
        return os.path.abspath(_config_path(spec, "--config-file"))
    folders = trainer_config_folders(trainer, config_dir)
    for folder in folders:
        path = os.path.join(folder, spec if spec.endswith(".yaml") else spec + ".yaml")
        if os.path.isfile(path):
            return path
    names = sorted({_stem(p) for f in folders for p in glob.glob(os.path.join(f, "*.yaml"))})
    raise DasslLiteError(f"Trainer config {spec!r} is neither a file nor a name in "
                         f"{' or '.join(folders)} (available: {', '.join(names) or 'none'})")


def _config_path(spec: str, what: str) -> str:
    """``spec`` when it is a file, else the bundled config it names (logged); else an error
    that says it does not exist and lists the nearest bundled names."""
    path, notice = find_config(spec, what)
    if notice:
        logger.info(notice)
    return path


def config_label(path: str) -> str:
    """The name a config file has in output paths (its stem, as upstream's ``CFG``)."""
    return _stem(path)
