#!/bin/bash
# MaPLe base-to-novel, step 2: evaluate the final weights on the new classes.
# Usage: DATA=/path/to/datasets bash scripts/maple/base2new_test.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
TRAINER=MaPLe
CFG=${CFG:-vit_b16_c2_ep5_batch4_2ctx}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
base2new_test "$@"
