#!/bin/bash
# PromptSRC base-to-novel, step 1: train on the base classes.
# Usage: DATA=/path/to/datasets bash scripts/promptsrc/base2new_train.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
TRAINER=PromptSRC
CFG=${CFG:-vit_b16_c2_ep20_batch4_4+4ctx}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
base2new_train "$@"
