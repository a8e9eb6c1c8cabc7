# Shared by scripts/<trainer>/*.sh, which set TRAINER and CFG and then source this file.
# Upstream habits, thin calls of tools/train.py:
#
#   DATA=/path/to/datasets bash scripts/coop/base2new_train.sh oxford_pets 1 [KEY VALUE ...]
#   DATA=/path/to/datasets bash scripts/coop/base2new_test.sh  oxford_pets 1
#   DATA=/path/to/datasets bash scripts/coop/xd_train.sh 1
#   DATA=/path/to/datasets bash scripts/coop/xd_test.sh caltech101 1
#
# Environment: DATA (dataset root, required), CFG (trainer config name under
# configs/trainers/<TRAINER>/ or a YAML path), SHOTS (default 16), OUTPUT (default output),
# SOURCE (cross-dataset source, default imagenet), PYTHON (default .venv/bin/python, else
# python), IMPORT (a module/file for tools/train.py --import), DRY_RUN (1: print the folders
# and commands, run nothing).
# DATASET is a config stem (oxford_pets -> configs/datasets/oxford_pets.yaml) or a YAML path.
# Evaluations load the epoch the training run ended at (its results.json), never a fixed number.
# tools/base2new.py, tools/fewshot.py and tools/crossdataset.py run whole sweeps with summaries.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python; fi
fi
SHOTS="${SHOTS:-16}"
OUTPUT="${OUTPUT:-output}"
SOURCE="${SOURCE:-imagenet}"
LOAD_EPOCH=""  # set by scripts whose upstream passes the epoch to evaluate (MMA's LOADEP)

usage() {  # usage "ARGS": print how to call the running script and stop
    echo "usage: DATA=/path/to/datasets bash $0 $1" >&2
    exit 2
}

require_data() {
    if [ -z "${DATA:-}" ]; then
        echo "error: DATA is not set; point it at your dataset root, e.g." \
             "DATA=/path/to/datasets bash $0 ..." >&2
        exit 2
    fi
}

stem() { basename "$1" .yaml; }

dataset_yaml() {
    case "$1" in *.yaml|*/*) echo "$1" ;; *) echo "$REPO/configs/datasets/$1.yaml" ;; esac
}

cfg_yaml() {
    case "$CFG" in
        *.yaml|*/*) echo "$CFG" ;;
        *) echo "$REPO/configs/trainers/$TRAINER/$CFG.yaml" ;;
    esac
}

results_epoch() {  # DIR: the "epoch" of DIR/results.json ("none" if null, "" if no file)
    [ -f "$1/results.json" ] || return 0
    sed -n 's/^ *"epoch": *\([0-9a-z]*\),\{0,1\}$/\1/p' "$1/results.json" | sed 's/null/none/'
}

load_epoch_flag() {  # DIR: "--load-epoch N" for the epoch the run in DIR ended at, if any
    local epoch
    if [ -n "${LOAD_EPOCH:-}" ]; then echo "--load-epoch $LOAD_EPOCH"; return 0; fi
    epoch="$(results_epoch "$1")"
    if compgen -G "$1/*/model-best.pth.tar" > /dev/null; then return 0; fi  # best-val model
    case "$epoch" in ''|none) ;; *) echo "--load-epoch $epoch" ;; esac
}

dry_run() { [ -n "${DRY_RUN:-}" ] && [ "${DRY_RUN}" != 0 ]; }

train_py() {  # train_py ARGS...: tools/train.py with the trainer, its config and the data root
    local import=()
    if [ -n "${IMPORT:-}" ]; then import=(--import "$IMPORT"); fi
    local cmd=("$PYTHON" "$REPO/tools/train.py" --root "${DATA:-\$DATA}" --trainer "$TRAINER"
               --config-file "$(cfg_yaml)" "${import[@]}" "$@")
    if dry_run; then echo "[dry-run] \$ ${cmd[*]}"; return 0; fi
    "${cmd[@]}"
}

train_run() {  # DIR SEED DATASET [KEY VALUE ...]: train into DIR unless it finished
    local dir=$1 seed=$2 dataset=$3
    shift 3
    if [ -f "$dir/results.json" ]; then
        echo "Results are available in $dir (results.json). Skip this job"
        return 0
    fi
    if dry_run; then
        echo "[dry-run] would write $dir"
    elif [ -d "$dir" ]; then
        echo "Resuming the run in $dir"
    else
        echo "Run this job and save the output to $dir"
    fi
    train_py --seed "$seed" --dataset-config-file "$(dataset_yaml "$dataset")" \
        --output-dir "$dir" "$@"
}

eval_run() {  # DIR MODEL_DIR SEED DATASET [KEY VALUE ...]: evaluate MODEL_DIR's final weights
    local dir=$1 model_dir=$2 seed=$3 dataset=$4
    shift 4
    if dry_run; then
        echo "[dry-run] would write $dir (evaluating $model_dir)"
        train_py --seed "$seed" --dataset-config-file "$(dataset_yaml "$dataset")" \
            --output-dir "$dir" --model-dir "$model_dir" --eval-only "$@"
        return 0
    fi
    if [ ! -f "$model_dir/results.json" ]; then
        echo "error: no finished training run in $model_dir; run the training script first" >&2
        exit 1
    fi
    if [ -f "$dir/results.json" ] \
        && [ "$(results_epoch "$dir")" = "$(results_epoch "$model_dir")" ]; then
        echo "Results are available in $dir (results.json). Skip this job"
        return 0
    fi
    echo "Evaluate $model_dir and save the output to $dir"
    # shellcheck disable=SC2046  # the flag is two words
    train_py --seed "$seed" --dataset-config-file "$(dataset_yaml "$dataset")" --output-dir "$dir" \
        --model-dir "$model_dir" $(load_epoch_flag "$model_dir") --eval-only "$@"
}

base2new_dir() {  # PHASE DATASET SEED
    echo "$OUTPUT/base2new/$1/$(stem "$2")/shots_$SHOTS/$TRAINER/$(stem "$CFG")/seed$3"
}

base2new_train() {  # DATASET SEED [KEY VALUE ...]: train on the base classes
    [ $# -ge 2 ] || usage "DATASET SEED [KEY VALUE ...]"
    dry_run || require_data
    local dataset=$1 seed=$2
    shift 2
    train_run "$(base2new_dir train_base "$dataset" "$seed")" "$seed" "$dataset" "$@" \
        DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES base
}

base2new_test() {  # DATASET SEED [KEY VALUE ...]: evaluate on the new classes
    [ $# -ge 2 ] || usage "DATASET SEED [KEY VALUE ...]"
    dry_run || require_data
    local dataset=$1 seed=$2
    shift 2
    eval_run "$(base2new_dir test_new "$dataset" "$seed")" \
        "$(base2new_dir train_base "$dataset" "$seed")" "$seed" "$dataset" "$@" \
        DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES new
}

xd_source_dir() {  # SEED: the source training run (upstream xd_train.sh layout)
    echo "$OUTPUT/$(stem "$SOURCE")/$TRAINER/$(stem "$CFG")_${SHOTS}shots/seed$1"
}

is_int() { case "$1" in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }

xd_train() {  # [DATASET] SEED [KEY VALUE ...]: train on DATASET (MaPLe/PromptSRC order) or SOURCE
    [ $# -ge 1 ] || usage "[DATASET] SEED [KEY VALUE ...]"
    if ! is_int "$1"; then  # upstream MaPLe / PromptSRC: xd_train.sh DATASET SEED
        [ $# -ge 2 ] && is_int "$2" || usage "[DATASET] SEED [KEY VALUE ...]"
        SOURCE=$1
        shift
    fi
    dry_run || require_data
    local seed=$1
    shift
    train_run "$(xd_source_dir "$seed")" "$seed" "$SOURCE" "$@" DATASET.NUM_SHOTS "$SHOTS"
}

xd_test() {  # DATASET SEED [KEY VALUE ...]: evaluate the source run on DATASET
    [ $# -ge 2 ] || usage "DATASET SEED [KEY VALUE ...]"
    dry_run || require_data
    local dataset=$1 seed=$2
    shift 2
    local dir="$OUTPUT/evaluation/$TRAINER/$(stem "$CFG")_${SHOTS}shots/$(stem "$dataset")/seed$seed"
    eval_run "$dir" "$(xd_source_dir "$seed")" "$seed" "$dataset" "$@"
}
