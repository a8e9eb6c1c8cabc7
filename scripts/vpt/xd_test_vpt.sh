#!/bin/bash
# Upstream MaPLe (multimodal-prompt-learning) name for scripts/vpt/xd_test.sh (same arguments, same folders).
# Usage: DATA=/path/to/datasets bash scripts/vpt/xd_test_vpt.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
source "$(dirname "${BASH_SOURCE[0]}")/xd_test.sh"
