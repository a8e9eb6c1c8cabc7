#!/bin/bash
# Upstream PromptSRC reproduce_base2novel_setting.sh: released weights (WEIGHTSPATH/base/seed<S>) on base and new classes.
# Usage: DATA=/path/to/datasets bash scripts/promptsrc/reproduce_base2novel_setting.sh DATASET SEED WEIGHTSPATH [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=PromptSRC
CFG=${CFG:-vit_b16_c2_ep20_batch4_4+4ctx}
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
reproduce_base2new "$@"
