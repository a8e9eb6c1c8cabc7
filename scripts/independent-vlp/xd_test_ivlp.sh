#!/bin/bash
# Upstream MaPLe (multimodal-prompt-learning) name for scripts/ivlp/xd_test.sh (same arguments, same folders).
# Usage: DATA=/path/to/datasets bash scripts/independent-vlp/xd_test_ivlp.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
source "$(dirname "${BASH_SOURCE[0]}")/../ivlp/xd_test.sh"
