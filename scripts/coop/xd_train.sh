#!/bin/bash
# CoOp cross-dataset / domain generalization: train on $SOURCE (default imagenet).
# Usage: DATA=/path/to/datasets bash scripts/coop/xd_train.sh SEED [KEY VALUE ...]  (see scripts/common.sh)
TRAINER=CoOp
CFG=${CFG:-vit_b16_ctxv1}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
xd_train "$@"
