#!/bin/bash
# Upstream CoOp coop/zeroshot.sh: zero-shot CLIP on DATASET with config CFG (rn50, rn101, vit_b32, vit_b16).
# Usage: DATA=/path/to/datasets bash scripts/coop/zeroshot.sh DATASET CFG [KEY VALUE ...]  (see scripts/upstream.sh)
TRAINER=ZeroshotCLIP
CFG=${CFG:-}  # given as the second argument
source "$(dirname "${BASH_SOURCE[0]}")/../upstream.sh"
zeroshot "$@"
