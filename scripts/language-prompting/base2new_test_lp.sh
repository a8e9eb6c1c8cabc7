#!/bin/bash
# Upstream MaPLe (multimodal-prompt-learning) language prompting: IVLP with text prompts only.
# Usage: DATA=/path/to/datasets bash scripts/language-prompting/base2new_test_lp.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
CFG=${CFG:-vit_b16_c2_ep5_batch4_4ctx_language_only}
source "$(dirname "${BASH_SOURCE[0]}")/../ivlp/base2new_test.sh"
