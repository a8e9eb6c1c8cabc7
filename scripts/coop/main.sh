#!/bin/bash
# Upstream CoOp main.sh: few-shot training, seeds $SEEDS (1 2 3), CoOp's nctx/csc/ctp folder level.
# Usage: DATA=/path/to/datasets bash scripts/coop/main.sh DATASET CFG CTP NCTX SHOTS CSC [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=CoOp
CFG=${CFG:-}  # given as the second argument
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
coop_main "$@"
