#!/bin/bash
# ZeroshotCLIP cross-dataset / domain generalization: evaluate on $SOURCE (default imagenet; nothing to train).
# Usage: DATA=/path/to/datasets bash scripts/zsclip/xd_train.sh SEED [KEY VALUE ...]  (see scripts/common.sh)
TRAINER=ZeroshotCLIP
CFG=${CFG:-vit_b16}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
xd_train "$@"
