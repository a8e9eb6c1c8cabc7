#!/usr/bin/env python
r"""Few-shot learning (all classes) over datasets, shot counts and seeds.

    python tools/fewshot.py --trainer CoOp --config-file vit_b16 --datasets all \
        --benchmark papers --shots 1 2 4 8 16 --seeds 1 2 3 --root $DATA [KEY VALUE ...]

Runs go to output/<dataset>/<TRAINER>/<cfg>_<K>shots/seed<S> (upstream main.sh layout);
finished runs are skipped, unfinished ones resumed. Summary: output/fewshot_summary_*.json/.csv.
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
    sys.exit(main("fewshot", repo_root=ROOT))
