#!/bin/bash
# Upstream PromptSRC few_shot.sh: all classes, seeds $SEEDS (1 2 3).
# Usage: DATA=/path/to/datasets bash scripts/promptsrc/few_shot.sh DATASET SHOTS [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=PromptSRC
CFG=${CFG:-vit_b16_c2_ep50_batch4_4+4ctx_few_shot}
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
few_shot "$@"
