"""Dassl-compatible default configuration.

Keys, names and defaults follow Dassl.pytorch's ``get_cfg_default()`` for everything that
CoOp / MaPLe style YAML files use. Keys marked "dassl_lite" are our additions; they default to
upstream behaviour.
"""
from yacs.config import CfgNode as CN

_C = CN()
_C.VERSION = 1
# Directory for log.txt, config.yaml, checkpoints and results.json
_C.OUTPUT_DIR = "./output"
# Directory of a previous run to resume from
_C.RESUME = ""
# Negative: random seed; non-negative: fixed seed
_C.SEED = -1
_C.USE_CUDA = True
_C.VERBOSE = True

# ---------------------------------------------------------------- Input
_C.INPUT = CN()
_C.INPUT.SIZE = (224, 224)
_C.INPUT.INTERPOLATION = "bilinear"
# dassl_lite: the test pipeline's resize. "crop" (Dassl's): the shorter side to max(SIZE), then a
# centre crop of SIZE. "squash": straight to SIZE, no crop (the train pipeline's resize); VTAB-1k
# is evaluated so (KMnP/vpt resizes every split to 224 x 224; the prepared-folder papers'
# --direct-resize), where a crop would cut counted objects or distances out of the image.
_C.INPUT.TEST_RESIZE = "crop"
_C.INPUT.TRANSFORMS = ()
_C.INPUT.NO_TRANSFORM = False
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
_C.INPUT.CROP_PADDING = 4
_C.INPUT.RRCROP_SCALE = (0.08, 1.0)
_C.INPUT.CUTOUT_N = 1
_C.INPUT.CUTOUT_LEN = 16
_C.INPUT.GN_MEAN = 0.0
_C.INPUT.GN_STD = 0.15
_C.INPUT.RANDAUGMENT_N = 2
_C.INPUT.RANDAUGMENT_M = 10
_C.INPUT.COLORJITTER_B = 0.4
_C.INPUT.COLORJITTER_C = 0.4
_C.INPUT.COLORJITTER_S = 0.4
_C.INPUT.COLORJITTER_H = 0.1
_C.INPUT.RGS_P = 0.2
_C.INPUT.GB_P = 0.5
_C.INPUT.GB_K = 21
# dassl_lite: anomaly masks are resized with "nearest", or "bilinear"/"bicubic" (torch) then
# >= 0.5, or "pil_bicubic" (PIL bicubic on the 0/255 mask, float kept: AF-CLIP's reference code)
_C.INPUT.MASK_INTERPOLATION = "bilinear"

# ---------------------------------------------------------------- Dataset
_C.DATASET = CN()
_C.DATASET.ROOT = ""
_C.DATASET.NAME = ""
_C.DATASET.SOURCE_DOMAINS = ()
_C.DATASET.TARGET_DOMAINS = ()
_C.DATASET.NUM_LABELED = -1
# Images per class for few-shot training (-1: all)
_C.DATASET.NUM_SHOTS = -1
_C.DATASET.VAL_PERCENT = 0.1
_C.DATASET.STL10_FOLD = -1
_C.DATASET.CIFAR_C_TYPE = ""
_C.DATASET.CIFAR_C_LEVEL = 1
_C.DATASET.ALL_AS_UNLABELED = False
# all, base or new (base-to-novel protocol; CoOp/MaPLe add this key in their train.py)
_C.DATASET.SUBSAMPLE_CLASSES = "all"
# dassl_lite: anomaly detection datasets (MVTecAD, VisA, ToyMVTec, ToyVisA)
_C.DATASET.ANOMALY = CN()
# Split the trainer trains on: "train" (normal images) or "test" (all test images with masks;
# zero-shot methods train on another dataset's test split)
_C.DATASET.ANOMALY.TRAIN_SPLIT = "train"
# "" reads the dataset's own layout; a file name (e.g. "meta.json") reads that APRIL-GAN /
# AnomalyCLIP meta file in the dataset folder instead
_C.DATASET.ANOMALY.META_FILE = ""
# Categories to keep (empty: all)
_C.DATASET.ANOMALY.CATEGORIES = ()
# AnomalyFolder (own data, anomalib's Folder arguments): folders under DATASET.ROOT, or under
# each DATASET.ROOT/<category>/ (one folder per category)
_C.DATASET.ANOMALY.FOLDER = CN()
_C.DATASET.ANOMALY.FOLDER.NORMAL_DIR = "good"  # normal images (train; part to test, see below)
_C.DATASET.ANOMALY.FOLDER.ABNORMAL_DIR = "bad"  # anomalous test images (sub-folders: defects)
_C.DATASET.ANOMALY.FOLDER.MASK_DIR = ""  # masks of the anomalous images ("": none)
_C.DATASET.ANOMALY.FOLDER.NORMAL_TEST_DIR = ""  # normal test images ("": split NORMAL_DIR)
# Fraction of NORMAL_DIR held out as normal test images when NORMAL_TEST_DIR is ""
_C.DATASET.ANOMALY.FOLDER.NORMAL_SPLIT_RATIO = 0.2
_C.DATASET.ANOMALY.FOLDER.EXTENSIONS = ()  # image file endings (empty: the usual ones)

# dassl_lite: VTAB-1k datasets (VTAB1k_<task>): "final" trains on train800val200.txt and tests
# on test.txt; "tune" trains on train800.txt and tests on val200.txt (the VPT paper's protocol)
_C.DATASET.VTAB = CN()
_C.DATASET.VTAB.MODE = "final"

# ---------------------------------------------------------------- Dataloader
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.K_TRANSFORMS = 1
_C.DATALOADER.RETURN_IMG0 = False
_C.DATALOADER.TRAIN_X = CN()
_C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_X.N_DOMAIN = 0
_C.DATALOADER.TRAIN_X.N_INS = 16
_C.DATALOADER.TRAIN_U = CN()
_C.DATALOADER.TRAIN_U.SAME_AS_X = True
_C.DATALOADER.TRAIN_U.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_U.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_U.N_DOMAIN = 0
_C.DATALOADER.TRAIN_U.N_INS = 16
_C.DATALOADER.TEST = CN()
_C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
_C.DATALOADER.TEST.BATCH_SIZE = 32
# dassl_lite: frozen image features cached on disk, for trainers whose image encoder takes no
# prompt (ZeroshotCLIP, CoOp, CoCoOp, ...); see dassl_lite/data/feature_cache.py
_C.DATALOADER.FEATURE_CACHE = CN()
_C.DATALOADER.FEATURE_CACHE.ENABLED = True  # val/test features are read from / added to the cache
_C.DATALOADER.FEATURE_CACHE.DIR = ""  # "" = $DASSL_LITE_FEATURE_CACHE or ~/.cache/dassl_lite/features
_C.DATALOADER.FEATURE_CACHE.DTYPE = "auto"  # auto (exact: the model's dtype), fp16, fp32
_C.DATALOADER.FEATURE_CACHE.MAX_GB = 20.0  # size bound; least recently used segments go first
# K > 0: train on K augmented views per image encoded once, one drawn per epoch with the run's
# seed (an approximation of fresh augmentation; opt-in)
_C.DATALOADER.FEATURE_CACHE.TRAIN_VIEWS = 0
# With TRAIN_VIEWS 0: train on cached features when the training transform's only randomness is
# random flips (every outcome encoded once; the same flips drawn as with images: exact)
_C.DATALOADER.FEATURE_CACHE.TRAIN_EXACT = True

# ---------------------------------------------------------------- Model
_C.MODEL = CN()
_C.MODEL.INIT_WEIGHTS = ""
# torch.compile the frozen CLIP encoders and the prompt learner (ClipPromptTrainer family;
# docs/speed.md). Off by default: compiling costs seconds to minutes per new input shape.
_C.MODEL.COMPILE = False
_C.MODEL.BACKBONE = CN()
# A CLIP name ("ViT-B/16", "RN50", "ToyCLIP", ...) or a path to a checkpoint file
_C.MODEL.BACKBONE.NAME = ""
_C.MODEL.BACKBONE.PRETRAINED = True
# dassl_lite: where CLIP weights are looked up / downloaded ("" = $DASSL_LITE_CLIP_CACHE or ~/.cache/clip)
_C.MODEL.BACKBONE.CACHE_DIR = ""
_C.MODEL.HEAD = CN()
_C.MODEL.HEAD.NAME = ""
_C.MODEL.HEAD.HIDDEN_LAYERS = ()
_C.MODEL.HEAD.ACTIVATION = "relu"
_C.MODEL.HEAD.BN = True
_C.MODEL.HEAD.DROPOUT = 0.0

# ---------------------------------------------------------------- Optimization
_C.OPTIM = CN()
_C.OPTIM.NAME = "adam"
_C.OPTIM.LR = 0.0003
_C.OPTIM.WEIGHT_DECAY = 5e-4
_C.OPTIM.MOMENTUM = 0.9
_C.OPTIM.SGD_DAMPNING = 0
_C.OPTIM.SGD_NESTEROV = False
_C.OPTIM.RMSPROP_ALPHA = 0.99
_C.OPTIM.ADAM_BETA1 = 0.9
_C.OPTIM.ADAM_BETA2 = 0.999
_C.OPTIM.STAGED_LR = False
_C.OPTIM.NEW_LAYERS = ()
_C.OPTIM.BASE_LR_MULT = 0.1
_C.OPTIM.LR_SCHEDULER = "single_step"
# -1 or 0: the step size equals MAX_EPOCH
_C.OPTIM.STEPSIZE = (-1,)
_C.OPTIM.GAMMA = 0.1
_C.OPTIM.MAX_EPOCH = 10
# > 0 enables warmup
_C.OPTIM.WARMUP_EPOCH = -1
# linear or constant
_C.OPTIM.WARMUP_TYPE = "linear"
_C.OPTIM.WARMUP_CONS_LR = 1e-5
_C.OPTIM.WARMUP_MIN_LR = 1e-5
# True: the next scheduler starts counting from 0 after warmup
_C.OPTIM.WARMUP_RECOUNT = True

# ---------------------------------------------------------------- Train
_C.TRAIN = CN()
# Save every N epochs (<= 0: only the last one)
_C.TRAIN.CHECKPOINT_FREQ = 0
_C.TRAIN.PRINT_FREQ = 10
_C.TRAIN.COUNT_ITER = "train_x"
# dassl_lite: wrap the model in DataParallel when more than one GPU is visible
_C.TRAIN.DATA_PARALLEL = True

# ---------------------------------------------------------------- Test
_C.TEST = CN()
_C.TEST.EVALUATOR = "Classification"
_C.TEST.PER_CLASS_RESULT = False
# Save the confusion matrix to OUTPUT_DIR/cmat.pt
_C.TEST.COMPUTE_CMAT = False
_C.TEST.NO_TEST = False
# test or val for the final evaluation
_C.TEST.SPLIT = "test"
# last_step or best_val
_C.TEST.FINAL_MODEL = "last_step"
# dassl_lite: the AnomalyDetection evaluator
_C.TEST.ANOMALY = CN()
# Gaussian sigma (pixels) applied to each anomaly map before pixel metrics (0: none)
_C.TEST.ANOMALY.MAP_SIGMA = 4.0
# AUPRO: "exact" (MVTec / anomalib) or "legacy200" (200 thresholds, reference code)
_C.TEST.ANOMALY.AUPRO = "exact"
# legacy200 FPR normalisation: "minmax" (APRIL-GAN / AnomalyCLIP) or "max" (AF-CLIP)
_C.TEST.ANOMALY.AUPRO_NORM = "minmax"
_C.TEST.ANOMALY.FPR_LIMIT = 0.3
# Pixel curves on scores rounded to this many leading float32 bits (10..24; relative precision
# 2**(9 - bits) at any magnitude); 0: exact (slower)
_C.TEST.ANOMALY.PIXEL_BITS = 24
# Write overlays of every test map and a grid per category to OUTPUT_DIR/maps (--save-maps)
_C.TEST.ANOMALY.SAVE_MAPS = False
# Per-image decisions in OUTPUT_DIR/scores.txt: None (none), a number (score >= it is
# anomalous) or "f1max" (per category, the F1-maximising threshold on the labelled test images)
_C.TEST.ANOMALY.THRESHOLD = None

# ---------------------------------------------------------------- Trainer
# Each trainer adds its own section through a registered config extender.
_C.TRAINER = CN()
_C.TRAINER.NAME = ""
