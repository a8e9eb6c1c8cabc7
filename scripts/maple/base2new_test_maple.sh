#!/bin/bash
# Upstream MaPLe (multimodal-prompt-learning) name for scripts/maple/base2new_test.sh (same arguments, same folders).
# Usage: DATA=/path/to/datasets bash scripts/maple/base2new_test_maple.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
source "$(dirname "${BASH_SOURCE[0]}")/base2new_test.sh"
