#!/usr/bin/env python
r"""Anomaly detection protocol: zero-shot cross-dataset (both directions) and few-shot.

    python tools/anomaly.py --trainer ZeroshotAD --config-file toy --root DATA \
        --train-dataset toy_mvtec --test-datasets toy_visa --shots 1 2 4 --seeds 1 2 3
    python tools/anomaly.py --trainer AFCLIP --config-file vit_l14_336_518 --root $DATA \
        --train-dataset mvtec --test-datasets visa

Per direction A -> B and seed: train on A's test split into
output/anomaly/train/<A>/<TRAINER>/<cfg>/seed<S>, evaluate on every category of B into
output/anomaly/<A>_to_<B>/<TRAINER>/<cfg>/shots_<k>/seed<S> (k = 0: zero-shot; k > 0: k normal
reference images per category drawn with the seed). Finished runs are skipped, unfinished ones
resumed. Summary: output/anomaly/summary_<TRAINER>_<cfg>.json/.csv and a table.

    python tools/anomaly.py --table --root DATA --seeds 1 2 --grid anomaly_grid.png

The method table: every row of every registered trainer's TABLE_ROWS (label, config, shots),
ToyMVTec -> ToyVisA and back, one table (output/anomaly/table.json/.csv/.md); --methods keeps
some rows; --grid draws one heatmap column per table line on the same test images.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import datasets  # noqa: E402,F401  (registers the datasets)
import trainers  # noqa: E402,F401  (registers the trainers and their config sections)
from dassl_lite.protocols.anomaly import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(repo_root=ROOT))
