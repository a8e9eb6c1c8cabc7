#!/bin/bash
# CoCoOp base-to-novel, step 2: evaluate the final weights on the new classes.
# Usage: DATA=/path/to/datasets bash scripts/cocoop/base2new_test.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
TRAINER=CoCoOp
CFG=${CFG:-vit_b16_c4_ep10_batch1_ctxv1}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
base2new_test "$@"
