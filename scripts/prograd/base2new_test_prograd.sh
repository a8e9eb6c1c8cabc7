#!/bin/bash
# Upstream ProGrad (BeierZhu/Prompt-align) ProGrad.public/scripts/base2new_test_prograd.sh: base-to-novel test on the new classes, seeds $SEEDS (1 2 3).
# Usage: DATA=/path/to/datasets bash scripts/prograd/base2new_test_prograd.sh DATASET [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=ProGrad
CFG=${CFG:-rn50_ep100}
SHOTS=${SHOTS:-4}  # upstream's value (NCTX 16, CSC False, CTP end, LAMBDA 1.0)
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
prograd_base2new test "$@"
