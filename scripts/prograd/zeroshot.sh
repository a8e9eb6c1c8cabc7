#!/bin/bash
# Upstream ProGrad ProGrad.public/scripts/zeroshot.sh: CoOp's zeroshot.sh (same arguments, same folders).
# Usage: DATA=/path/to/datasets bash scripts/prograd/zeroshot.sh DATASET CFG [KEY VALUE ...]  (see scripts/upstream.sh)
source "$(dirname "${BASH_SOURCE[0]}")/../coop/zeroshot.sh"
