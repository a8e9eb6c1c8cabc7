#!/usr/bin/env python
r"""Base-to-novel generalization over datasets and seeds, with Base / New / HM tables.

    python tools/base2new.py --trainer CoOp --config-file vit_b16_ctxv1 \
        --datasets all --benchmark papers --seeds 1 2 3 --root $DATA [--shots 16] [KEY VALUE ...]

Per dataset and seed: train on the base classes into
output/base2new/train_base/<dataset>/shots_<K>/<TRAINER>/<cfg>/seed<S> (its final test is the
base accuracy), then evaluate the final weights on the new classes in .../test_new/...
Finished runs are skipped, unfinished ones resumed. Summary: output/base2new/summary_*.json/.csv.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import datasets  # noqa: E402,F401  (registers the datasets)
import trainers  # noqa: E402,F401  (registers the trainers and their config sections)
from dassl_lite.protocols.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("base2new", repo_root=ROOT))
