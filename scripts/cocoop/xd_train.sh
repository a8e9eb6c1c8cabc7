#!/bin/bash
# CoCoOp cross-dataset / domain generalization: train on $SOURCE (default imagenet).
# Usage: DATA=/path/to/datasets bash scripts/cocoop/xd_train.sh SEED [KEY VALUE ...]  (see scripts/common.sh)
TRAINER=CoCoOp
CFG=${CFG:-vit_b16_c4_ep10_batch1_ctxv1}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
xd_train "$@"
