# Upstream scripts with their own argument orders, on top of scripts/common.sh (same
# environment: DATA, OUTPUT, PYTHON, IMPORT, DRY_RUN; SEEDS for the loops, default "1 2 3").
#
#   CoOp     main.sh DATASET CFG CTP NCTX SHOTS CSC      eval.sh DATASET CFG
#   MaPLe    few_shot.sh DATASET SHOTS
#            reproduce_maple.sh DATASET SEED WEIGHTSPATH  reproduce_maple_xd.sh DATASET SEED WEIGHTSPATH
#   PromptSRC few_shot.sh DATASET SHOTS
#            reproduce_base2novel_setting.sh DATASET SEED WEIGHTSPATH
#            reproduce_few_shot.sh DATASET SHOTS WEIGHTSPATH   reproduce_xd.sh DATASET SEED WEIGHTSPATH
#   zero-shot zsclip/zeroshot.sh, coop/zeroshot.sh DATASET CFG
#   KgCoOp   kgcoop/base2new_train.sh, kgcoop/base2new_test.sh DATASET WEIGHT (seeds $SEEDS)
#   ProGrad  prograd/base2new_{train,test}_{prograd,main}.sh DATASET (seeds $SEEDS; _main: CoOp)
#            prograd/prograd.sh DATASET CFG CTP NCTX SHOTS CSC; main.sh, eval.sh, zeroshot.sh (CoOp's)
#   MMA      mmadapter/base2new_train.sh DATASET SEED CFG   base2new_test.sh DATASET SEED CFG LOADEP
#            mmadapter/xd_train.sh SEED CFG                 xd_test.sh DATASET SEED CFG LOADEP
# Upstream MaPLe's names (maple/base2new_train_maple.sh, independent-vlp/*_ivlp.sh, vpt/*_vpt.sh,
# language-prompting/*_lp.sh) source the project's scripts/<trainer>/*.sh.
#
# Folders are upstream's; reproduce_* evaluate released checkpoints (WEIGHTSPATH/base/seed<S>,
# WEIGHTSPATH/seed<S>, WEIGHTSPATH/<K>shot/seed<S>) at the epoch of their newest
# model.pth.tar-<N> (LOADEP overrides).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
SEEDS="${SEEDS:-1 2 3}"

coop_dir() {  # DATASET CFG SHOTS NCTX CSC CTP SEED: CoOp main.sh's run folder
    echo "$OUTPUT/$(stem "$1")/$TRAINER/$(stem "$2")_${3}shots/nctx${4}_csc${5}_ctp${6}/seed$7"
}

coop_main() {  # DATASET CFG CTP NCTX SHOTS CSC [KEY VALUE ...]: upstream CoOp main.sh
    [ $# -ge 6 ] || usage "DATASET CFG CTP NCTX SHOTS CSC [KEY VALUE ...]"
    dry_run || require_data
    local dataset=$1 ctp=$3 nctx=$4 shots=$5 csc=$6 seed
    CFG=$2
    shift 6
    for seed in $SEEDS; do
        train_run "$(coop_dir "$dataset" "$CFG" "$shots" "$nctx" "$csc" "$ctp" "$seed")" \
            "$seed" "$dataset" "$@" TRAINER.COOP.N_CTX "$nctx" TRAINER.COOP.CSC "$csc" \
            TRAINER.COOP.CLASS_TOKEN_POSITION "$ctp" DATASET.NUM_SHOTS "$shots"
    done
}

coop_eval() {  # DATASET CFG [KEY VALUE ...]: upstream CoOp eval.sh (the SOURCE run on DATASET)
    [ $# -ge 2 ] || usage "DATASET CFG [KEY VALUE ...]"
    dry_run || require_data
    local dataset=$1 nctx=${NCTX:-16} csc=${CSC:-False} ctp=${CTP:-end} seed
    CFG=$2
    shift 2
    local level="$(stem "$CFG")_${SHOTS}shots/nctx${nctx}_csc${csc}_ctp${ctp}"
    for seed in $SEEDS; do
        eval_run "$OUTPUT/evaluation/$TRAINER/$level/$(stem "$dataset")/seed$seed" \
            "$(coop_dir "$SOURCE" "$CFG" "$SHOTS" "$nctx" "$csc" "$ctp" "$seed")" "$seed" \
            "$dataset" "$@" TRAINER.COOP.N_CTX "$nctx" TRAINER.COOP.CSC "$csc" \
            TRAINER.COOP.CLASS_TOKEN_POSITION "$ctp"
    done
}

few_shot() {  # DATASET SHOTS [KEY VALUE ...]: upstream PromptSRC few_shot.sh (seeds $SEEDS)
    [ $# -ge 2 ] || usage "DATASET SHOTS [KEY VALUE ...]"
    dry_run || require_data
    local dataset=$1 shots=$2 seed
    shift 2
    for seed in $SEEDS; do
        train_run "$OUTPUT/$(stem "$dataset")/$TRAINER/$(stem "$CFG")_${shots}shots/seed$seed" \
            "$seed" "$dataset" "$@" DATASET.NUM_SHOTS "$shots"
    done
}

released_epoch_flag() {  # DIR: "--load-epoch N" for $LOADEP or DIR's newest model.pth.tar-N
    local n="${LOADEP:-}"
    if [ -z "$n" ]; then
        n="$(find "$1" -mindepth 2 -maxdepth 2 -name 'model.pth.tar-*' 2>/dev/null \
             | sed 's/.*model\.pth\.tar-//' | sort -n | tail -1)"
    fi
    if [ -n "$n" ]; then echo "--load-epoch $n"; fi
}

released_eval() {  # DIR MODEL_DIR SEED DATASET [KEY VALUE ...]: evaluate released weights
    local dir=$1 model_dir=$2 seed=$3 dataset=$4
    shift 4
    if dry_run; then
        echo "[dry-run] would write $dir (evaluating $model_dir)"
    elif [ -f "$dir/results.json" ]; then
        echo "Results are already available in $dir. Skipping..."
        return 0
    elif [ ! -d "$model_dir" ]; then
        echo "error: no released checkpoint folder $model_dir" >&2
        exit 1
    else
        echo "Evaluate $model_dir and save the output to $dir"
    fi
    # shellcheck disable=SC2046  # the flag is two words
    train_py --seed "$seed" --dataset-config-file "$(dataset_yaml "$dataset")" --output-dir "$dir" \
        --model-dir "$model_dir" $(released_epoch_flag "$model_dir") --eval-only "$@"
}

reproduce_base2new() {  # DATASET SEED WEIGHTSPATH [KEY VALUE ...]: base and new accuracy
    [ $# -ge 3 ] || usage "DATASET SEED WEIGHTSPATH [KEY VALUE ...]"
    dry_run || require_data
    local dataset=$1 seed=$2 weights=$3 sub
    shift 3
    for sub in base new; do
        released_eval "$(base2new_dir "test_$sub" "$dataset" "$seed")" "$weights/base/seed$seed" \
            "$seed" "$dataset" "$@" DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES "$sub"
    done
}

reproduce_xd() {  # DATASET SEED WEIGHTSPATH [KEY VALUE ...]: a target of cross-dataset / DG
    [ $# -ge 3 ] || usage "DATASET SEED WEIGHTSPATH [KEY VALUE ...]"
    dry_run || require_data
    local dataset=$1 seed=$2 weights=$3
    shift 3
    released_eval "$OUTPUT/evaluation/$TRAINER/$(stem "$CFG")_${SHOTS}shots/$(stem "$dataset")/seed$seed" \
        "$weights/seed$seed" "$seed" "$dataset" "$@" DATASET.NUM_SHOTS "$SHOTS"
}

reproduce_few_shot() {  # DATASET SHOTS WEIGHTSPATH [KEY VALUE ...]: seeds $SEEDS
    [ $# -ge 3 ] || usage "DATASET SHOTS WEIGHTSPATH [KEY VALUE ...]"
    dry_run || require_data
    local dataset=$1 shots=$2 weights=$3 seed
    shift 3
    for seed in $SEEDS; do
        released_eval "$OUTPUT/few_shot/$(stem "$dataset")/$TRAINER/$(stem "$CFG")_${shots}shots/seed$seed" \
            "$weights/${shots}shot/seed$seed" "$seed" "$dataset" "$@" DATASET.NUM_SHOTS "$shots"
    done
}

zeroshot() {  # DATASET CFG [KEY VALUE ...]: upstream zeroshot.sh (output/<TRAINER>/<CFG>/<DATASET>)
    [ $# -ge 2 ] || usage "DATASET CFG [KEY VALUE ...]"
    dry_run || require_data
    local dataset=$1 dir
    CFG=$2
    shift 2
    dir="$OUTPUT/$TRAINER/$(stem "$CFG")/$(stem "$dataset")"
    if dry_run; then echo "[dry-run] would write $dir"; fi
    train_py --dataset-config-file "$(dataset_yaml "$dataset")" --output-dir "$dir" --eval-only "$@"
}

kgcoop_dir() {  # PHASE DATASET WEIGHT SEED: KgCoOp's base2new folder (shots_<K>_<W>)
    echo "$OUTPUT/base2new/$1/$(stem "$2")/shots_${SHOTS}_$3/$TRAINER/$(stem "$CFG")/seed$4"
}

kgcoop_base2new() {  # train|test DATASET WEIGHT [KEY VALUE ...]: upstream KgCoOp base2new_*.sh
    local phase=$1
    shift
    [ $# -ge 2 ] || usage "DATASET WEIGHT [KEY VALUE ...]"
    dry_run || require_data
    local dataset=$1 weight=$2 seed
    shift 2
    local opts=(TRAINER.KGCOOP.N_CTX "${NCTX:-4}" TRAINER.KGCOOP.CSC "${CSC:-False}"
                TRAINER.KGCOOP.W "$weight" TRAINER.KGCOOP.CLASS_TOKEN_POSITION "${CTP:-end}"
                DATASET.NUM_SHOTS "$SHOTS")
    for seed in $SEEDS; do
        local train_dir
        train_dir="$(kgcoop_dir train_base "$dataset" "$weight" "$seed")"
        if [ "$phase" = train ]; then
            train_run "$train_dir" "$seed" "$dataset" "$@" "${opts[@]}" DATASET.SUBSAMPLE_CLASSES base
        else
            eval_run "$(kgcoop_dir test_new "$dataset" "$weight" "$seed")" "$train_dir" "$seed" \
                "$dataset" "$@" "${opts[@]}" DATASET.SUBSAMPLE_CLASSES new
        fi
    done
}

prograd_base2new() {  # train|test DATASET [KEY VALUE ...]: upstream ProGrad base2new_*_{prograd,main}.sh
    local phase=$1
    shift
    [ $# -ge 1 ] || usage "DATASET [KEY VALUE ...]"
    dry_run || require_data
    local dataset=$1 seed
    shift
    local opts=(TRAINER.COOP.N_CTX "${NCTX:-16}" TRAINER.COOP.CSC "${CSC:-False}"
                TRAINER.COOP.CLASS_TOKEN_POSITION "${CTP:-end}")
    if [ "$TRAINER" = ProGrad ]; then opts=(LOSS.LAMBDA "${LAMBDA:-1.0}" "${opts[@]}"); fi
    for seed in $SEEDS; do
        "base2new_$phase" "$dataset" "$seed" "$@" "${opts[@]}"
    done
}

mma_cfg() {  # CFG: a config name is MMA's (upstream's configs/trainers/MultiModalAdapter/ files)
    case "$1" in *.yaml|*/*) echo "$1" ;; *) echo "$REPO/configs/trainers/MMA/$1.yaml" ;; esac
}

mma_dir() {  # PHASE DATASET SEED: upstream MMA's base2new folder (no CFG level)
    echo "$OUTPUT/base2new/$1/$(stem "$2")/shots_$SHOTS/$TRAINER/seed$3"
}

mma_base2new() {  # train|test DATASET SEED CFG [LOADEP] [KEY VALUE ...]: upstream MMA base2new_*.sh
    local phase=$1
    shift
    if [ "$phase" = train ]; then
        [ $# -ge 3 ] || usage "DATASET SEED CFG [KEY VALUE ...]"
    else
        [ $# -ge 4 ] || usage "DATASET SEED CFG LOADEP [KEY VALUE ...]"
    fi
    dry_run || require_data
    local dataset=$1 seed=$2
    CFG="$(mma_cfg "$3")"
    shift 3
    local train_dir
    train_dir="$(mma_dir train_base "$dataset" "$seed")"
    if [ "$phase" = train ]; then
        train_run "$train_dir" "$seed" "$dataset" "$@" DATASET.NUM_SHOTS "$SHOTS" \
            DATASET.SUBSAMPLE_CLASSES base
    else
        LOAD_EPOCH=$1
        shift
        eval_run "$(mma_dir test_new "$dataset" "$seed")" "$train_dir" "$seed" "$dataset" "$@" \
            DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES new
    fi
}

mma_xd() {  # train SEED CFG | test DATASET SEED CFG LOADEP [KEY VALUE ...]: upstream MMA xd_*.sh
    local phase=$1
    shift
    if [ "$phase" = train ]; then
        [ $# -ge 2 ] || usage "SEED CFG [KEY VALUE ...]"
        CFG="$(mma_cfg "$2")"
        dry_run || require_data
        local seed=$1
        shift 2
        train_run "$(xd_source_dir "$seed")" "$seed" "$SOURCE" "$@" DATASET.NUM_SHOTS "$SHOTS"
    else
        [ $# -ge 4 ] || usage "DATASET SEED CFG LOADEP [KEY VALUE ...]"
        CFG="$(mma_cfg "$3")"
        LOAD_EPOCH=$4
        dry_run || require_data
        local dataset=$1 seed=$2
        shift 4
        local dir="$OUTPUT/evaluation/$TRAINER/$(stem "$CFG")_${SHOTS}shots/$(stem "$dataset")/seed$seed"
        eval_run "$dir" "$(xd_source_dir "$seed")" "$seed" "$dataset" "$@"
    fi
}
