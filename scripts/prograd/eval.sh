#!/bin/bash
# Upstream ProGrad ProGrad.public/scripts/eval.sh: CoOp's eval.sh with upstream's SHOTS 4.
# Usage: DATA=/path/to/datasets bash scripts/prograd/eval.sh DATASET CFG [KEY VALUE ...]  (see scripts/upstream.sh)
SHOTS=${SHOTS:-4}
source "$(dirname "${BASH_SOURCE[0]}")/../coop/eval.sh"
