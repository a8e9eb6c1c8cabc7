"""The adapters' and probes' YAMLs merge with the defaults and carry the reference values."""
import glob
import os

import pytest

from dassl_lite.config import apply_config_extenders, get_cfg_default, merge_from_file

import trainers  # noqa: F401  (registers the config sections)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAINERS = {"LinearProbeCLIP": "LINEAR_PROBE", "CLIPAdapter": "CLIP_ADAPTER",
            "TipAdapter": "TIP_ADAPTER", "TipAdapterF": "TIP_ADAPTER", "CLIPLoRA": "CLIP_LORA"}
FILES = sorted(f for t in TRAINERS
               for f in glob.glob(os.path.join(REPO, "configs", "trainers", t, "*.yaml")))


def merged(path):
    cfg = apply_config_extenders(get_cfg_default())
    merge_from_file(cfg, os.path.join(REPO, "configs", "trainers", path))
    return cfg


@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.relpath(p, REPO))
def test_config_merges(path):
    assert merged(path).MODEL.BACKBONE.NAME


@pytest.mark.parametrize("trainer, section", list(TRAINERS.items()))
def test_toy_configs_use_the_toy_clip_at_64_px_in_fp32(trainer, section):
    cfg = merged(f"{trainer}/toy.yaml")
    assert cfg.MODEL.BACKBONE.NAME == "ToyCLIP" and cfg.INPUT.SIZE == (64, 64)
    assert cfg.TRAINER[section].PREC == "fp32"


def test_defaults_are_the_references():
    cfg = apply_config_extenders(get_cfg_default())
    lora = cfg.TRAINER.CLIP_LORA
    assert (lora.R, lora.ALPHA, lora.DROPOUT_RATE, lora.PARAMS) == (2, 1.0, 0.25, ["q", "k", "v"])
    assert (lora.ENCODER, lora.POSITION) == ("both", "all")
    assert (cfg.TRAINER.CLIP_ADAPTER.RATIO, cfg.TRAINER.CLIP_ADAPTER.REDUCTION) == (0.2, 4)
    tip = cfg.TRAINER.TIP_ADAPTER
    assert (tip.SEARCH_SCALE, tip.SEARCH_STEP, tip.AUGMENT_EPOCH) == ([7.0, 3.0], [200, 20], 10)
    assert (tip.INIT_ALPHA, tip.INIT_BETA) == (1.17, 1.0)
    lp = cfg.TRAINER.LINEAR_PROBE
    assert lp.C_INIT == [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6] and lp.NUM_STEP == 8


def test_reference_schedules():
    tip_f = merged("TipAdapterF/rn50.yaml")
    assert (tip_f.OPTIM.NAME, tip_f.OPTIM.LR, tip_f.OPTIM.MAX_EPOCH) == ("adamw", 0.001, 20)
    assert tip_f.DATALOADER.TRAIN_X.BATCH_SIZE == 256 and tip_f.INPUT.RRCROP_SCALE == (0.5, 1.0)
    lora = merged("CLIPLoRA/vit_b16.yaml")
    assert (lora.OPTIM.NAME, lora.OPTIM.LR, lora.OPTIM.WEIGHT_DECAY) == ("adamw", 2e-4, 0.01)
    assert lora.DATALOADER.TRAIN_X.BATCH_SIZE == 32 and lora.TRAINER.CLIP_LORA.PREC == "amp"
    for fitted in ("LinearProbeCLIP/rn50.yaml", "TipAdapter/rn50.yaml"):
        assert merged(fitted).OPTIM.MAX_EPOCH == 1
