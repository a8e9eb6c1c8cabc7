#!/usr/bin/env python
r"""Cross-dataset transfer and domain generalization: train on a source, evaluate on targets.

    python tools/crossdataset.py --trainer CoCoOp --config-file vit_b16_c4_ep10_batch1_ctxv1 \
        --benchmark papers --seeds 1 2 3 --root $DATA          # ImageNet -> the other 10
    python tools/crossdataset.py ... --benchmark papers_dg      # ImageNet -> V2, Sketch, A, R
    python tools/crossdataset.py ... --benchmark toy_dg         # toy_shapes -> textures, sketch

Source runs: output/<source>/<TRAINER>/<cfg>_<K>shots/seed<S> (upstream xd_train.sh layout);
evaluations: output/evaluation/<TRAINER>/<cfg>_<K>shots/<target>/seed<S> (xd_test.sh).
Summary: output/evaluation/summary_*.json/.csv.
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
    sys.exit(main("crossdataset", repo_root=ROOT))
