#!/bin/bash
# Upstream reproduce_lp.sh: evaluate released base-to-novel weights (WEIGHTSPATH/base/seed<S>) on base and new classes.
# Usage: DATA=/path/to/datasets bash scripts/language-prompting/reproduce_lp.sh DATASET SEED WEIGHTSPATH [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=IVLP
CFG=${CFG:-vit_b16_c2_ep5_batch4_4ctx_language_only}
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
reproduce_base2new "$@"
