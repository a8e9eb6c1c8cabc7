#!/bin/bash
# Upstream MaPLe (multimodal-prompt-learning) name for scripts/maple/xd_train.sh (same arguments, same folders).
# Usage: DATA=/path/to/datasets bash scripts/maple/xd_train_maple.sh DATASET SEED [KEY VALUE ...]  (see scripts/common.sh)
source "$(dirname "${BASH_SOURCE[0]}")/xd_train.sh"
