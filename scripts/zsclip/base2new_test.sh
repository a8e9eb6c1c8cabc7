#!/bin/bash
# ZeroshotCLIP base-to-novel, step 2: evaluate on the new classes.
# Usage: DATA=/path/to/datasets bash scripts/zsclip/base2new_test.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
TRAINER=ZeroshotCLIP
CFG=${CFG:-vit_b16}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
base2new_test "$@"
