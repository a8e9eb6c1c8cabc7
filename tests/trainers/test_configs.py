"""Every trainer YAML merges with the defaults plus the trainers' config sections."""
import glob
import os

import pytest

from dassl_lite.config import apply_config_extenders, get_cfg_default, merge_from_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIRS = ("ZeroshotCLIP", "CoOp", "CoCoOp")
FILES = sorted(f for d in CONFIG_DIRS for f in glob.glob(os.path.join(REPO, "configs", "trainers", d, "*.yaml")))


def merged(path):
    cfg = apply_config_extenders(get_cfg_default())
    merge_from_file(cfg, path)
    return cfg


def test_upstream_config_names_are_present():
    names = {os.path.relpath(f, os.path.join(REPO, "configs", "trainers")) for f in FILES}
    coop = ["vit_b16", "vit_b16_ep50", "vit_b16_ep100", "vit_b32", "vit_b32_ep50", "rn50",
            "rn50_ep50", "rn50_ep100", "rn50_ctxv1", "rn50_ep50_ctxv1", "rn50_val", "rn101",
            "rn101_ep50", "toy"]
    cocoop = ["vit_b16_c4_ep10_batch1", "vit_b16_c4_ep10_batch1_ctxv1", "vit_b16_c8_ep10_batch1",
              "vit_b16_c16_ep10_batch1", "toy"]
    expected = ([f"CoOp/{n}.yaml" for n in coop] + [f"CoCoOp/{n}.yaml" for n in cocoop]
                + [f"ZeroshotCLIP/{n}.yaml" for n in ("vit_b16", "rn50", "toy")])
    assert set(expected) <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.relpath(p, REPO))
def test_config_merges(path):
    cfg = merged(path)
    assert cfg.MODEL.BACKBONE.NAME


def test_upstream_values():
    coop = merged(os.path.join(REPO, "configs/trainers/CoOp/rn50_ep50_ctxv1.yaml"))
    assert (coop.OPTIM.NAME, coop.OPTIM.LR, coop.OPTIM.MAX_EPOCH) == ("sgd", 0.002, 50)
    assert coop.TRAINER.COOP.CTX_INIT == "a photo of a" and coop.TRAINER.COOP.N_CTX == 16
    assert coop.TRAINER.COOP.PREC == "fp16" and coop.TRAINER.COOP.CLASS_TOKEN_POSITION == "end"
    assert coop.INPUT.SIZE == (224, 224) and coop.MODEL.BACKBONE.NAME == "RN50"
    cocoop = merged(os.path.join(REPO, "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml"))
    assert cocoop.DATALOADER.TRAIN_X.BATCH_SIZE == 1 and cocoop.OPTIM.MAX_EPOCH == 10
    assert (cocoop.TRAINER.COCOOP.N_CTX, cocoop.TRAINER.COCOOP.CTX_INIT) == (4, "a photo of a")


def test_toy_configs_use_the_toy_clip_at_64_px_in_fp32():
    for trainer, key in (("ZeroshotCLIP", "COOP"), ("CoOp", "COOP"), ("CoCoOp", "COCOOP")):
        cfg = merged(os.path.join(REPO, f"configs/trainers/{trainer}/toy.yaml"))
        assert cfg.MODEL.BACKBONE.NAME == "ToyCLIP" and cfg.INPUT.SIZE == (64, 64)
        assert cfg.TRAINER[key].PREC == "fp32"
        assert cfg.INPUT.PIXEL_MEAN == [0.48145466, 0.4578275, 0.40821073]
