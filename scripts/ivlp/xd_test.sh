#!/bin/bash
# IVLP cross-dataset / domain generalization: evaluate the source run on DATASET.
# Usage: DATA=/path/to/datasets bash scripts/ivlp/xd_test.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
TRAINER=IVLP
CFG=${CFG:-vit_b16_c2_ep5_batch4_2+2ctx}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
xd_test "$@"
