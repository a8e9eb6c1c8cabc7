"""The toy anomaly world on disk, in the real layouts, and its registered datasets.

``ToyMVTec`` is written in MVTec AD's layout (``toy_mvtec/<category>/{train/good, test/good,
test/<defect>, ground_truth/<defect>/NNN_mask.png}``, masks 0/255; images with two defects go
to ``combined``) and ``ToyVISA`` in VisA's (``toy_visa/<object>/Data/Images/{Normal,Anomaly}``
as JPEG, ``Data/Masks/Anomaly/*.png`` holding defect-type ids 1..k, ``split_csv/1cls.csv``), so
the real readers are what reads them. Both also get an APRIL-GAN / AnomalyCLIP ``meta.json``.
Images are 128 px. A dataset is generated on first use into a temporary sibling folder and
renamed into place when complete (marker file ``toy_anomaly.json``); same seed, same bytes.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional

import numpy as np
from PIL import Image

from dassl_lite.registry import DATASET_REGISTRY

from .mvtec import MVTecAD
from .toy_anomaly import (ANOMALY_GENERATOR_VERSION, TOY_ANOMALY_DATASETS, defect_plan,
                          render_sample)
from .visa import VisA

logger = logging.getLogger(__name__)

__all__ = ["ToyAnomalyCounts", "TOY_ANOMALY_DIRS", "make_toy_anomaly_world", "ToyMVTec",
           "ToyVisA"]

TOY_ANOMALY_DIRS = {"ToyMVTec": "toy_mvtec", "ToyVisA": "toy_visa"}
MARKER_FILE = "toy_anomaly.json"
IMAGE_SIZE = 128
JPEG_QUALITY = 95


@dataclass(frozen=True)
class ToyAnomalyCounts:
    """Images per category: normal train, normal test and defective test."""

    train_good: int = 20
    test_good: int = 10
    test_defective: int = 15


def _marker(name: str, seed: int, counts: ToyAnomalyCounts) -> dict:
    return {"dataset": name, "generator_version": ANOMALY_GENERATOR_VERSION, "seed": seed,
            "image_size": IMAGE_SIZE, "counts": asdict(counts)}


def is_complete(folder: str, name: str, seed: int, counts: ToyAnomalyCounts) -> bool:
    """Whether ``folder`` holds a finished generation of ``name`` with these parameters."""
    try:
        with open(os.path.join(folder, MARKER_FILE)) as f:
            return json.load(f) == _marker(name, seed, counts)
    except (OSError, ValueError):
        return False


def _save(img: Image.Image, path: str, **kwargs) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buf = io.BytesIO()
    img.save(buf, **kwargs)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def _samples(name: str, category: str, seed: int, counts: ToyAnomalyCounts):
    """(split, index, defects) of every image of a category; indices never repeat."""
    for i in range(counts.train_good):
        yield "train", i, []
    for i in range(counts.test_good):
        yield "test", 1000 + i, []
    for i in range(counts.test_defective):
        yield "test", 2000 + i, defect_plan(name, i, seed, category)


def _meta_entry(img: str, mask: str, category: str, defect: str, anomaly: int) -> dict:
    return {"img_path": img, "mask_path": mask, "cls_name": category, "specie_name": defect,
            "anomaly": anomaly}


def _write_mvtec(folder: str, seed: int, counts: ToyAnomalyCounts) -> dict:
    meta: Dict[str, Dict[str, List[dict]]] = {"train": {}, "test": {}}
    for cat in TOY_ANOMALY_DATASETS["ToyMVTec"]["categories"]:
        c, numbers = cat.name, {}
        for split, index, defects in _samples("ToyMVTec", c, seed, counts):
            s = render_sample("ToyMVTec", c, index, defects, seed, IMAGE_SIZE)
            defect = "good" if not defects else ("combined" if len(defects) > 1 else defects[0])
            n = numbers.setdefault((split, defect), 0)
            numbers[(split, defect)] = n + 1
            img = f"{c}/{split}/{defect}/{n:03d}.png"
            _save(s.image, os.path.join(folder, img), format="PNG", compress_level=6)
            mask = ""
            if defects:
                mask = f"{c}/ground_truth/{defect}/{n:03d}_mask.png"
                binary = Image.fromarray(((s.mask > 0) * 255).astype(np.uint8), mode="L")
                _save(binary, os.path.join(folder, mask), format="PNG", compress_level=6)
            entry = _meta_entry(img, mask, c, "" if not defects else defect, int(bool(defects)))
            meta[split].setdefault(c, []).append(entry)
    return meta


def _write_visa(folder: str, seed: int, counts: ToyAnomalyCounts) -> dict:
    info = TOY_ANOMALY_DATASETS["ToyVisA"]
    type_id = {d: k for k, d in enumerate(info["defects"], start=1)}
    rows, meta = [], {"train": {}, "test": {}}
    for cat in info["categories"]:
        c, n_normal, n_anomaly = cat.name, 0, 0
        for split, index, defects in _samples("ToyVisA", c, seed, counts):
            s = render_sample("ToyVisA", c, index, defects, seed, IMAGE_SIZE)
            if defects:
                img = f"{c}/Data/Images/Anomaly/{n_anomaly:03d}.JPG"
                mask = f"{c}/Data/Masks/Anomaly/{n_anomaly:03d}.png"
                ids = np.zeros_like(s.mask)
                for k, d in enumerate(defects, start=1):  # defect-type ids, as VisA's
                    ids[s.mask == k] = type_id[d]
                _save(Image.fromarray(ids, mode="L"), os.path.join(folder, mask), format="PNG")
                n_anomaly += 1
            else:
                img, mask = f"{c}/Data/Images/Normal/{n_normal:04d}.JPG", ""
                n_normal += 1
            _save(s.image, os.path.join(folder, img), format="JPEG", quality=JPEG_QUALITY)
            label = "anomaly" if defects else "normal"
            rows.append([c, split, label, img, mask])
            meta[split].setdefault(c, []).append(_meta_entry(img, mask, c, "", int(bool(defects))))
    os.makedirs(os.path.join(folder, "split_csv"))
    with open(os.path.join(folder, "split_csv", "1cls.csv"), "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([["object", "split", "label", "image",
                                                       "mask"]] + rows)
    return meta


_WRITERS = {"ToyMVTec": _write_mvtec, "ToyVisA": _write_visa}


def _generate(root: str, name: str, seed: int, counts: ToyAnomalyCounts) -> str:
    final = os.path.join(root, TOY_ANOMALY_DIRS[name])
    if os.path.exists(final) and not os.path.exists(os.path.join(final, MARKER_FILE)):
        raise FileExistsError(f"{final} exists but is not a toy anomaly folder (no "
                              f"{MARKER_FILE}); move it away")
    logger.info("Generating toy anomaly dataset %s under %s (seed %d)", name, final, seed)
    tmp = tempfile.mkdtemp(prefix=f".{TOY_ANOMALY_DIRS[name]}.tmp-", dir=root)
    os.chmod(tmp, 0o755)
    try:
        meta = _WRITERS[name](tmp, seed, counts)
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        with open(os.path.join(tmp, MARKER_FILE), "w") as f:  # last: marks completion
            json.dump(_marker(name, seed, counts), f)
        if is_complete(final, name, seed, counts):  # another process was faster
            shutil.rmtree(tmp)
            return final
        if os.path.exists(final):
            logger.warning("Replacing %s (generated with other parameters)", final)
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_complete(final, name, seed, counts):
            return final
        raise
    return final


def make_toy_anomaly_world(root: str, names: Optional[Iterable[str]] = None, seed: int = 0,
                           counts: ToyAnomalyCounts = ToyAnomalyCounts()) -> Dict[str, str]:
    """Write ``ToyMVTec`` and/or ``ToyVisA`` under ``root`` (idempotent); name -> folder."""
    names = list(TOY_ANOMALY_DIRS if names is None else names)
    unknown = [n for n in names if n not in TOY_ANOMALY_DIRS]
    if unknown:
        raise ValueError(f"toy anomaly datasets are {', '.join(TOY_ANOMALY_DIRS)}; got {unknown}")
    root = os.path.abspath(os.path.expanduser(root))
    os.makedirs(root, exist_ok=True)
    out = {}
    for name in names:
        folder = os.path.join(root, TOY_ANOMALY_DIRS[name])
        out[name] = folder if is_complete(folder, name, seed, counts) else _generate(
            root, name, seed, counts)
    return out


class _ToyAnomaly:
    """Generates the dataset's folder on first use (seed 0, default counts)."""

    instructions = "generated automatically on first use under DATASET.ROOT"
    # what tools/anomaly.py --table (which never generates data) names when the folder is missing
    build_command = "python tools/make_toy_data.py --root {root} --anomaly"
    dataset_dir_aliases = ()

    def prepare(self, root: str) -> None:
        name = type(self).__name__
        if not is_complete(os.path.join(root, TOY_ANOMALY_DIRS[name]), name, 0,
                           ToyAnomalyCounts()):
            make_toy_anomaly_world(root, [name])


@DATASET_REGISTRY.register()
class ToyMVTec(_ToyAnomaly, MVTecAD):
    """Toy objects and textures with holes, scratches and stains, in MVTec AD's layout."""

    dataset_dir = TOY_ANOMALY_DIRS["ToyMVTec"]
    layout = MVTecAD.layout.replace("mvtec/", "toy_mvtec/")


@DATASET_REGISTRY.register()
class ToyVisA(_ToyAnomaly, VisA):
    """Toy objects and a texture with cracks, missing parts, spots and stains, in VisA's layout."""

    dataset_dir = TOY_ANOMALY_DIRS["ToyVisA"]
    layout = VisA.layout.replace("visa/", "toy_visa/")
