#!/bin/bash
# Upstream ProGrad ProGrad.public/scripts/base2new_train_main.sh: the same for CoOp (its baseline), seeds $SEEDS (1 2 3).
# Usage: DATA=/path/to/datasets bash scripts/prograd/base2new_train_main.sh DATASET [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=CoOp
CFG=${CFG:-rn50_ep100}
SHOTS=${SHOTS:-4}  # upstream's value (NCTX 16, CSC False, CTP end)
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
prograd_base2new train "$@"
