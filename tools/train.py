#!/usr/bin/env python
"""Train or evaluate a trainer, with upstream CoOp/MaPLe flags.

    python tools/train.py --trainer CoOp --dataset-config-file configs/datasets/oxford_pets.yaml \
        --config-file configs/trainers/CoOp/vit_b16.yaml --root DATA --output-dir out \
        DATASET.NUM_SHOTS 16

With no dataset or config file, ``python tools/train.py --trainer CoOp`` runs on the toy world
(generated under ``--root``, default ``./data``, on first use) with ``configs/trainers/CoOp/toy.yaml``.
``--import my_trainer.py`` registers your own trainers/datasets without editing this file.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import datasets  # noqa: E402,F401  (registers the datasets)
import trainers  # noqa: E402,F401  (registers the trainers and their config sections)
from dassl_lite.cli import main  # noqa: E402
from dassl_lite.errors import DasslLiteError  # noqa: E402
from dassl_lite.protocols.resolve import resolve_trainer_config  # noqa: E402
from dassl_lite.registry import TRAINER_REGISTRY  # noqa: E402

TOY_DATASET_CONFIG = os.path.join(ROOT, "configs", "datasets", "toy_shapes.yaml")
# The toy dataset of each task family (anomaly trainers: the toy anomaly world).
TOY_DATASET_CONFIGS = {"classification": TOY_DATASET_CONFIG,
                       "anomaly": os.path.join(ROOT, "configs", "datasets", "toy_visa.yaml")}


def use_toy_world_by_default(args) -> list:
    """No dataset given anywhere: run on the toy world with the trainer's toy config. Returns
    the notice for the run's log (none when a dataset was given)."""
    opts = args.opts or []
    if args.dataset_config_file or "DATASET.NAME" in opts[0::2]:
        return []
    if args.trainer not in TRAINER_REGISTRY:
        return []  # setup_cfg reports the unknown name with the closest one
    task = getattr(TRAINER_REGISTRY.get(args.trainer), "task", "classification")
    args.dataset_config_file = TOY_DATASET_CONFIGS[task]
    if not args.config_file:
        try:
            args.config_file = resolve_trainer_config(
                "toy", args.trainer, os.path.join(ROOT, "configs", "trainers"))
        except DasslLiteError:
            pass  # no toy config: the trainer's defaults
    if not args.root:
        args.root = os.path.join(os.getcwd(), "data")
    return [f"No dataset config given: using the toy world ({os.path.relpath(args.dataset_config_file)}, "
            f"config {os.path.relpath(args.config_file) if args.config_file else 'defaults'}, "
            f"data under {args.root})"]


if __name__ == "__main__":
    sys.exit(main(prepare=use_toy_world_by_default))
