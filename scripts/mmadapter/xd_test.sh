#!/bin/bash
# Upstream MMA scripts/mmadapter/xd_test.sh: evaluate the xd_train.sh run at epoch LOADEP on DATASET.
# Usage: DATA=/path/to/datasets bash scripts/mmadapter/xd_test.sh DATASET SEED CFG LOADEP [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=MultiModalAdapter  # upstream's name of MMA (its folders); CFG names configs/trainers/MMA/
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
mma_xd test "$@"
