#!/usr/bin/env python
"""Train or evaluate a trainer, with upstream CoOp/MaPLe flags.

    python tools/train.py --trainer CoOp --dataset-config-file configs/datasets/oxford_pets.yaml \
        --config-file configs/trainers/CoOp/vit_b16.yaml --root DATA --output-dir out \
        DATASET.NUM_SHOTS 16

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

if __name__ == "__main__":
    sys.exit(main())
