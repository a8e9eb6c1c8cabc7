#!/bin/bash
# Upstream PromptSRC reproduce_few_shot.sh: released weights (WEIGHTSPATH/<K>shot/seed<S>), seeds $SEEDS (1 2 3).
# Usage: DATA=/path/to/datasets bash scripts/promptsrc/reproduce_few_shot.sh DATASET SHOTS WEIGHTSPATH [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=PromptSRC
CFG=${CFG:-vit_b16_c2_ep50_batch4_4+4ctx_few_shot}
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
reproduce_few_shot "$@"
