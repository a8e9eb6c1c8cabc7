#!/bin/bash
# Upstream reproduce_maple_xd.sh: evaluate released ImageNet-trained weights (WEIGHTSPATH/seed<S>) on DATASET.
# Usage: DATA=/path/to/datasets bash scripts/maple/reproduce_maple_xd.sh DATASET SEED WEIGHTSPATH [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=MaPLe
CFG=${CFG:-vit_b16_c2_ep5_batch4_2ctx_cross_datasets}
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
reproduce_xd "$@"
