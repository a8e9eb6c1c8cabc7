#!/bin/bash
# Upstream KgCoOp scripts/base2new_test.sh (htyao89/KgCoOp): base-to-novel test on the new classes, seeds $SEEDS (1 2 3).
# Usage: DATA=/path/to/datasets bash scripts/kgcoop/base2new_test.sh DATASET WEIGHT [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=KgCoOp
CFG=${CFG:-vit_b16_ep100_ctxv1}
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
kgcoop_base2new test "$@"
