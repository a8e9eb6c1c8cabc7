#!/bin/bash
# ZeroshotCLIP cross-dataset / domain generalization: evaluate on DATASET.
# Usage: DATA=/path/to/datasets bash scripts/zsclip/xd_test.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
TRAINER=ZeroshotCLIP
CFG=${CFG:-vit_b16}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
xd_test "$@"
