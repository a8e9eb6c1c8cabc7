#!/bin/bash
# Upstream ProGrad ProGrad.public/scripts/prograd.sh: CoOp main.sh's few-shot runs and folders with ProGrad (LOSS.LAMBDA $LAMBDA, 1.0).
# Usage: DATA=/path/to/datasets bash scripts/prograd/prograd.sh DATASET CFG CTP NCTX SHOTS CSC [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=ProGrad
CFG=${CFG:-}  # given as the second argument
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
[ $# -ge 6 ] || usage "DATASET CFG CTP NCTX SHOTS CSC [KEY VALUE ...]"
coop_main "$@" LOSS.LAMBDA "${LAMBDA:-1.0}"
