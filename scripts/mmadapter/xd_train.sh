#!/bin/bash
# Upstream MMA scripts/mmadapter/xd_train.sh: train on $SOURCE (imagenet), 16 shots, for cross-dataset transfer.
# Usage: DATA=/path/to/datasets bash scripts/mmadapter/xd_train.sh SEED CFG [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=MultiModalAdapter  # upstream's name of MMA (its folders); CFG names configs/trainers/MMA/
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
mma_xd train "$@"
