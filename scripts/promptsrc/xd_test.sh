#!/bin/bash
# PromptSRC cross-dataset, step 2: evaluate the $SOURCE (imagenet) run on DATASET.
# Usage: DATA=/path/to/datasets bash scripts/promptsrc/xd_test.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
TRAINER=PromptSRC
CFG=${CFG:-vit_b16_c2_ep5_batch4_4+4ctx_cross_datasets}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
xd_test "$@"
