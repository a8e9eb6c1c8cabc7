#!/bin/bash
# VPT base-to-novel, step 1: train on the base classes.
# Usage: DATA=/path/to/datasets bash scripts/vpt/base2new_train.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
TRAINER=VPT
CFG=${CFG:-vit_b16_c2_ep5_batch4_4}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
base2new_train "$@"
