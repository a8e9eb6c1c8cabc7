#!/bin/bash
# Upstream MaPLe (multimodal-prompt-learning) name for scripts/ivlp/base2new_test.sh (same arguments, same folders).
# Usage: DATA=/path/to/datasets bash scripts/independent-vlp/base2new_test_ivlp.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
source "$(dirname "${BASH_SOURCE[0]}")/../ivlp/base2new_test.sh"
