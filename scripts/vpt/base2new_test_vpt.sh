#!/bin/bash
# Upstream MaPLe (multimodal-prompt-learning) name for scripts/vpt/base2new_test.sh (same arguments, same folders).
# Usage: DATA=/path/to/datasets bash scripts/vpt/base2new_test_vpt.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
source "$(dirname "${BASH_SOURCE[0]}")/base2new_test.sh"
