#!/bin/bash
# PromptSRC cross-dataset, step 1: train on DATASET (upstream: imagenet).
# Usage: DATA=/path/to/datasets bash scripts/promptsrc/xd_train.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
TRAINER=PromptSRC
CFG=${CFG:-vit_b16_c2_ep5_batch4_4+4ctx_cross_datasets}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
xd_train "$@"
