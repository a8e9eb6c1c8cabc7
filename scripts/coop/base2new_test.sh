#!/bin/bash
# CoOp base-to-novel, step 2: evaluate the final weights on the new classes.
# Usage: DATA=/path/to/datasets bash scripts/coop/base2new_test.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
TRAINER=CoOp
CFG=${CFG:-vit_b16_ctxv1}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
base2new_test "$@"
