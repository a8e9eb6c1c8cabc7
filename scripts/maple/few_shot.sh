#!/bin/bash
# MaPLe few-shot training on all classes, seeds $SEEDS (1 2 3) (PromptSRC's few_shot.sh order).
# Usage: DATA=/path/to/datasets bash scripts/maple/few_shot.sh DATASET SHOTS [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=MaPLe
CFG=${CFG:-vit_b16_c2_ep5_batch4_2ctx}
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
few_shot "$@"
