#!/bin/bash
# Upstream reproduce_ivlp.sh: evaluate released base-to-novel weights (WEIGHTSPATH/base/seed<S>) on base and new classes.
# Usage: DATA=/path/to/datasets bash scripts/independent-vlp/reproduce_ivlp.sh DATASET SEED WEIGHTSPATH [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=IVLP
CFG=${CFG:-vit_b16_c2_ep5_batch4_2+2ctx}
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
reproduce_base2new "$@"
