#!/bin/bash
# Upstream reproduce_maple.sh: evaluate released base-to-novel weights (WEIGHTSPATH/base/seed<S>) on base and new classes.
# Usage: DATA=/path/to/datasets bash scripts/maple/reproduce_maple.sh DATASET SEED WEIGHTSPATH [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=MaPLe
CFG=${CFG:-vit_b16_c2_ep5_batch4_2ctx}
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
reproduce_base2new "$@"
