#!/bin/bash
# Upstream CoOp eval.sh: evaluate the $SOURCE (imagenet) main.sh runs on DATASET (NCTX, CSC, CTP as trained).
# Usage: DATA=/path/to/datasets bash scripts/coop/eval.sh DATASET CFG [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=CoOp
CFG=${CFG:-}  # given as the second argument
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
coop_eval "$@"
