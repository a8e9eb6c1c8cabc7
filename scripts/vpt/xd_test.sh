#!/bin/bash
# VPT cross-dataset / domain generalization: evaluate the source run on DATASET.
# Usage: DATA=/path/to/datasets bash scripts/vpt/xd_test.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
TRAINER=VPT
CFG=${CFG:-vit_b16_c2_ep5_batch4_4}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
xd_test "$@"
