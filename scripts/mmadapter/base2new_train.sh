#!/bin/bash
# Upstream MMA (ZjjConan/Multi-Modal-Adapter) scripts/mmadapter/base2new_train.sh: train on the base classes.
# Usage: DATA=/path/to/datasets bash scripts/mmadapter/base2new_train.sh DATASET SEED CFG [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=MultiModalAdapter  # upstream's name of MMA (its folders); CFG names configs/trainers/MMA/
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
mma_base2new train "$@"
