#!/bin/bash
# Upstream PromptSRC reproduce_xd.sh: released ImageNet-trained weights (WEIGHTSPATH/seed<S>) on DATASET.
# Usage: DATA=/path/to/datasets bash scripts/promptsrc/reproduce_xd.sh DATASET SEED WEIGHTSPATH [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=PromptSRC
CFG=${CFG:-vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets}
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
reproduce_xd "$@"
