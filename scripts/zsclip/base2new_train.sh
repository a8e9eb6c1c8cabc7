#!/bin/bash
# ZeroshotCLIP base-to-novel, step 1: evaluate on the base classes (nothing to train).
# Usage: DATA=/path/to/datasets bash scripts/zsclip/base2new_train.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
TRAINER=ZeroshotCLIP
CFG=${CFG:-vit_b16}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
base2new_train "$@"
