"""Every YAML of the deep prompt trainers merges; upstream files carry upstream values."""
import glob
import os

import pytest

from dassl_lite.config import apply_config_extenders, get_cfg_default, merge_from_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAINER_CONFIGS = os.path.join(REPO, "configs", "trainers")
CONFIG_DIRS = ("MaPLe", "IVLP", "VPT", "VPTDeep")
FILES = sorted(f for d in CONFIG_DIRS
               for f in glob.glob(os.path.join(TRAINER_CONFIGS, d, "*.yaml")))
TOY_LAYERS = 4  # ToyCLIP: 4 layers in each encoder (tools/pretrain_toy_clip.py ArchConfig)


def merged(relpath):
    cfg = apply_config_extenders(get_cfg_default())
    merge_from_file(cfg, os.path.join(TRAINER_CONFIGS, relpath))
    return cfg


def test_upstream_config_names_are_present():
    names = {os.path.relpath(f, TRAINER_CONFIGS) for f in FILES}
    assert {"MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
            "MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml",
            "IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml",
            "IVLP/vit_b16_c2_ep5_batch4_4ctx_language_only.yaml",
            "VPT/vit_b16_c2_ep5_batch4_4.yaml"} | {f"{d}/toy.yaml" for d in CONFIG_DIRS} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.relpath(p, TRAINER_CONFIGS))
def test_config_merges(path):
    assert merged(path).MODEL.BACKBONE.NAME


def test_defaults_are_upstream():
    cfg = apply_config_extenders(get_cfg_default())
    assert dict(cfg.TRAINER.MAPLE) == {"N_CTX": 2, "CTX_INIT": "a photo of a", "PREC": "fp16",
                                       "PROMPT_DEPTH": 9}
    assert dict(cfg.TRAINER.IVLP) == {"N_CTX_VISION": 2, "N_CTX_TEXT": 2,
                                      "CTX_INIT": "a photo of a", "PREC": "fp16",
                                      "PROMPT_DEPTH_VISION": 9, "PROMPT_DEPTH_TEXT": 9}
    assert dict(cfg.TRAINER.VPT) == {"N_CTX_VISION": 2, "CTX_INIT": "a photo of a",
                                     "PREC": "fp16", "PROMPT_DEPTH_VISION": 1}
    assert dict(cfg.TRAINER.VPTDEEP) == {"N_CTX": 8, "DEPTH": -1, "DROPOUT": 0.1, "PROJECT": -1,
                                         "HEAD": "clip", "CTX_INIT": "a photo of a",
                                         "PREC": "fp16"}


@pytest.mark.parametrize("relpath, lr, epochs, section", [
    ("MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", 0.0035, 5, {"PROMPT_DEPTH": 9, "N_CTX": 2}),
    ("MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml", 0.0026, 2,
     {"PROMPT_DEPTH": 3, "N_CTX": 2}),
    ("IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml", 0.0035, 5,
     {"N_CTX_VISION": 2, "N_CTX_TEXT": 2, "PROMPT_DEPTH_VISION": 12, "PROMPT_DEPTH_TEXT": 12}),
    ("IVLP/vit_b16_c2_ep5_batch4_4ctx_language_only.yaml", 0.0025, 5,
     {"N_CTX_VISION": 0, "N_CTX_TEXT": 4, "PROMPT_DEPTH_VISION": 0, "PROMPT_DEPTH_TEXT": 12}),
    ("VPT/vit_b16_c2_ep5_batch4_4.yaml", 0.0025, 5, {"N_CTX_VISION": 8, "PROMPT_DEPTH_VISION": 12}),
])
def test_upstream_values(relpath, lr, epochs, section):
    cfg = merged(relpath)
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH) == ("sgd", lr, epochs)
    assert (cfg.OPTIM.WARMUP_EPOCH, cfg.OPTIM.WARMUP_CONS_LR) == (1, 1e-5)
    assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 4 and cfg.INPUT.SIZE == (224, 224)
    assert cfg.MODEL.BACKBONE.NAME == "ViT-B/16"
    trainer = cfg.TRAINER[relpath.split("/")[0].upper()]
    assert trainer.PREC == "fp16" and trainer.CTX_INIT == "a photo of a"
    assert {k: trainer[k] for k in section} == section


@pytest.mark.parametrize("trainer, depth_keys", [
    ("MaPLe", ["PROMPT_DEPTH"]), ("IVLP", ["PROMPT_DEPTH_TEXT", "PROMPT_DEPTH_VISION"]),
    ("VPT", ["PROMPT_DEPTH_VISION"]), ("VPTDeep", ["DEPTH"]),
])
def test_toy_configs_fit_the_toy_clip(trainer, depth_keys):
    cfg = merged(f"{trainer}/toy.yaml")
    assert cfg.MODEL.BACKBONE.NAME == "ToyCLIP" and cfg.INPUT.SIZE == (64, 64)
    assert cfg.DATALOADER.NUM_WORKERS == 0 and cfg.OPTIM.MAX_EPOCH <= 20  # 16 steps an epoch
    section = cfg.TRAINER[trainer.upper()]
    assert section.PREC == "fp32"
    assert all(section[k] == -1 or 1 <= section[k] <= TOY_LAYERS for k in depth_keys)
