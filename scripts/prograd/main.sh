#!/bin/bash
# Upstream ProGrad ProGrad.public/scripts/main.sh: CoOp's main.sh (same arguments, same folders).
# Usage: DATA=/path/to/datasets bash scripts/prograd/main.sh DATASET CFG CTP NCTX SHOTS CSC [KEY VALUE ...]  (see scripts/upstream.sh)
source "$(dirname "${BASH_SOURCE[0]}")/../coop/main.sh"
