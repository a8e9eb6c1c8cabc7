#!/bin/bash
# Upstream reproduce_vpt.sh: evaluate released base-to-novel weights (WEIGHTSPATH/base/seed<S>) on base and new classes.
# Usage: DATA=/path/to/datasets bash scripts/vpt/reproduce_vpt.sh DATASET SEED WEIGHTSPATH [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=VPT
CFG=${CFG:-vit_b16_c2_ep5_batch4_4}
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
reproduce_base2new "$@"
