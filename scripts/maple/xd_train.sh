#!/bin/bash
# MaPLe cross-dataset / domain generalization: train on $SOURCE (default imagenet).
# Usage: DATA=/path/to/datasets bash scripts/maple/xd_train.sh SEED [KEY VALUE ...]  (see scripts/common.sh)
TRAINER=MaPLe
CFG=${CFG:-vit_b16_c2_ep5_batch4_2ctx_cross_datasets}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
xd_train "$@"
