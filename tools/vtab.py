#!/usr/bin/env python
r"""The VPT paper's VTAB-1k protocol (KMnP/vpt tune_vtab.py) over tasks, configs and seeds.

    python tools/vtab.py --trainer VPTSupervised --config-file vit_b16_in21k_vtab_deep \
        --tasks all --root $DATA [--seeds 42 44 82 100 800] [--lr ...] [--wd ...] [KEY VALUE ...]
    python tools/vtab.py --toy --root DATA          # the toy table (CPU)

Per task and config: tune on train800 -> val200 over the paper's lr x wd grid into
output/vtab/<task>/<TRAINER>/<cfg>/tune/lr<lr>_wd<wd>, pick the best val200 top-1 (ties: the
smallest lr, then the largest wd), retrain it on train800val200 and test on test into
.../final/lr<lr>_wd<wd>/seed<S>. Finished runs are skipped, unfinished ones resumed.
Summary and table: output/vtab/summary_<TRAINER>.json/.csv/.md (docs/protocols.md).
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import datasets  # noqa: E402,F401  (registers the datasets)
import trainers  # noqa: E402,F401  (registers the trainers and their config sections)
from datasets import vtab_tasks  # noqa: E402
from dassl_lite.protocols.vtab_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(vtab_tasks, repo_root=ROOT))
