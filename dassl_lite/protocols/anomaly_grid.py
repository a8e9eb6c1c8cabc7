"""The heatmap grid of ``tools/anomaly.py --table --grid FILE``: one column per table line on the
same test images.

For one direction A -> B and one seed, each line's evaluation run is repeated in memory (its
frozen config and its training run's weights, so its k references are the same draw) and the
``AnomalyDetection`` evaluator's maps (resized and smoothed as scored) are kept. The repeat must
reproduce the run's ``results.json`` (pixel and image AUROC), else the grid is refused. Rows:
per category of B, the first ``n_anomalous`` anomalous and the first normal test image by file
path. Columns: the image, its ground-truth mask, then one overlay per line, each method's map
scaled to its own range over all test images of the category (the scale the evaluator's
``maps/<category>/grid.png`` uses), with the ground-truth contour in white.
"""
from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

from ..engine import build_trainer
from ..errors import DasslLiteError
from ..evaluation.anomaly_maps import make_grid, overlay, save_png
from ..utils.image import read_image
from ..utils.seed import set_random_seed
from .jobs import Job, read_results
from .resolve import DatasetConfig

__all__ = ["write_method_grid", "pick_images", "evaluation_maps"]

GRID_TILE = 96  # pixels per tile (toy images are 128 px)
AGREE = 1e-6  # |grid repeat - run| allowed on the AUROCs (percent)


@contextmanager
def _quiet():
    """Trainers log at INFO while they are built and evaluated; keep the console to warnings."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)


def find_eval_job(jobs: Sequence[Job], source: str, target: str, shots: int, seed: int) -> Job:
    """The evaluation job of ``source -> target`` with ``shots`` and ``seed`` among ``jobs``."""
    for j in jobs:
        if (j.is_eval and j.dataset == target and j.train_job.dataset == source
                and j.shots == shots and j.seed == seed):
            return j
    raise DasslLiteError(f"No evaluation run {source} -> {target}, k = {shots}, seed {seed} "
                         f"was planned")


def evaluation_maps(job: Job) -> Dict[str, Dict[str, list]]:
    """Repeat ``job`` (an evaluation) in a scratch folder; per category what the evaluator
    processed (``impaths``, ``labels``, ``maps``, ``masks``). Checks that the repeat gives the
    run's image and pixel AUROC."""
    ran = read_results(job.output_dir)
    if ran is None:
        raise DasslLiteError(f"No results.json in {job.output_dir}: run the table first")
    with tempfile.TemporaryDirectory(prefix="anomaly_grid_") as scratch, _quiet():
        cfg = job.cfg.clone()
        cfg.defrost()
        cfg.OUTPUT_DIR = scratch
        cfg.freeze()
        set_random_seed(cfg.SEED)
        trainer = build_trainer(cfg)
        if trainer.get_model_names():
            trainer.load_model(job.train_job.output_dir)
        trainer.test()
        again = read_results(scratch) or {}
        evaluator = trainer.evaluator
        data = {c: evaluator.processed(c) for c in evaluator.categories}
    for key in ("image_auroc", "pixel_auroc"):
        a, b = again.get(key), ran.get(key)
        if a is None or b is None or abs(a - b) > AGREE:
            raise DasslLiteError(f"The grid's repeat of {job.name} gives {key} {a}, its run "
                                 f"{job.output_dir} {b}: the maps would not be the table's")
    return data


def pick_images(data: Dict[str, Dict[str, list]], n_anomalous: int) -> List[Tuple[str, int]]:
    """(category, index) of the rows: per category (sorted) its first ``n_anomalous``
    anomalous and its first normal test image by file path."""
    picks = []
    for category in sorted(data):
        d = data[category]
        order = sorted(range(len(d["impaths"])), key=lambda i: d["impaths"][i])
        bad = [i for i in order if d["labels"][i]][:n_anomalous]
        good = [i for i in order if not d["labels"][i]][:1]
        picks += [(category, i) for i in bad + good]
    return picks


def _title(label: str, k: int) -> List[str]:
    """Two lines: the label split before its last word ("AF-CLIP" / "few-shot k=1")."""
    head, _, tail = label.rpartition(" ")
    tail = f"{tail} k={k}" if k else tail
    return [head, tail] if head else [tail, ""]


def _mask_tile(mask: np.ndarray) -> Image.Image:
    return Image.fromarray((mask.astype(np.uint8) * 255)).convert("RGB")


def write_method_grid(path: str, columns: Sequence[Tuple[str, int, Sequence[Job]]],
                      direction: Tuple[DatasetConfig, DatasetConfig], seed: int,
                      n_anomalous: int = 2) -> str:
    """Write the grid PNG to ``path``; ``columns``: (line label, k, the jobs of its plan)."""
    if not path.lower().endswith(".png") or os.path.isdir(path):
        raise DasslLiteError(f"--grid {path}: give a file name ending in .png")
    source, target = direction
    maps = []
    for label, k, jobs in columns:
        maps.append(evaluation_maps(find_eval_job(jobs, source.label, target.label, k, seed)))
    first = maps[0]
    for (label, k, _), data in zip(columns, maps):
        if {c: d["impaths"] for c, d in data.items()} != {c: d["impaths"] for c, d in first.items()}:
            raise DasslLiteError(f"{label} (k = {k}) evaluated other test images than "
                                 f"{columns[0][0]}; the grid needs the same images")
    ranges = [{c: (float(np.min(d["maps"])), float(np.max(d["maps"]))) for c, d in data.items()}
              for data in maps]
    tiles, captions = [], []
    for category, i in pick_images(first, n_anomalous):
        d = first[category]
        image = read_image(d["impaths"][i])
        tiles += [image.resize(d["masks"][i].shape[::-1]), _mask_tile(d["masks"][i])]
        name = os.path.basename(d["impaths"][i])
        captions += [[category, name], ["anomalous" if d["labels"][i] else "normal", ""]]
        for data, rng in zip(maps, ranges):
            tiles.append(overlay(image, data[category]["maps"][i], data[category]["masks"][i],
                                 *rng[category]))
            captions.append(["", ""])
    titles = [["image", ""], ["ground truth", ""]]
    titles += [_title(label, k) for label, k, _ in columns]
    grid = make_grid(tiles, columns=len(titles), tile=GRID_TILE, captions=captions,
                     titles=titles)
    save_png(grid, path)
    return path
