#!/bin/bash
# Upstream MMA scripts/mmadapter/base2new_test.sh: evaluate the base2new_train.sh run at epoch LOADEP on the new classes.
# Usage: DATA=/path/to/datasets bash scripts/mmadapter/base2new_test.sh DATASET SEED CFG LOADEP [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=MultiModalAdapter  # upstream's name of MMA (its folders); CFG names configs/trainers/MMA/
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
mma_base2new test "$@"
