import pytest
from yacs.config import CfgNode as CN

from dassl_lite.cli import build_parser, setup_cfg
from dassl_lite.config import (
    ConfigError, apply_config_extenders, get_cfg_default, merge_from_file, merge_from_list,
    register_config_extender,
)
from dassl_lite.registry import CONFIG_EXTENDER_REGISTRY

MAPLE_YAML = """\
DATALOADER:
  TRAIN_X:
    BATCH_SIZE: 4
  TEST:
    BATCH_SIZE: 100
  NUM_WORKERS: 8
INPUT:
  SIZE: (224, 224)
  INTERPOLATION: "bicubic"
  PIXEL_MEAN: [0.48145466, 0.4578275, 0.40821073]
  PIXEL_STD: [0.26862954, 0.26130258, 0.27577711]
  TRANSFORMS: ["random_resized_crop", "random_flip", "normalize"]
OPTIM:
  NAME: "sgd"
  LR: 0.0035
  MAX_EPOCH: 5
  LR_SCHEDULER: "cosine"
  WARMUP_EPOCH: 1
  WARMUP_TYPE: "constant"
  WARMUP_CONS_LR: 1e-5
TRAIN:
  PRINT_FREQ: 20
MODEL:
  BACKBONE:
    NAME: "ViT-B/16"
TRAINER:
  MAPLE:
    N_CTX: 2
    CTX_INIT: "a photo of a"
    PREC: "fp16"
    PROMPT_DEPTH: 9
"""


def test_dassl_defaults():
    cfg = get_cfg_default()
    assert cfg.OPTIM.NAME == "adam" and cfg.OPTIM.LR == 0.0003
    assert cfg.OPTIM.LR_SCHEDULER == "single_step" and tuple(cfg.OPTIM.STEPSIZE) == (-1,)
    assert cfg.OPTIM.WARMUP_EPOCH == -1 and cfg.OPTIM.WARMUP_CONS_LR == 1e-5
    assert cfg.DATASET.NUM_SHOTS == -1 and cfg.DATASET.SUBSAMPLE_CLASSES == "all"
    assert cfg.DATALOADER.TRAIN_X.SAMPLER == "RandomSampler"
    assert cfg.DATALOADER.TEST.SAMPLER == "SequentialSampler"
    assert cfg.TEST.FINAL_MODEL == "last_step" and cfg.TEST.SPLIT == "test"
    assert cfg.SEED == -1 and cfg.USE_CUDA is True and cfg.OUTPUT_DIR == "./output"
    assert tuple(cfg.INPUT.SIZE) == (224, 224) and cfg.INPUT.INTERPOLATION == "bilinear"


def test_unknown_key_names_closest():
    cfg = get_cfg_default()
    with pytest.raises(ConfigError) as e:
        merge_from_list(cfg, ["OPTIM.LRR", "0.1"])
    assert str(e.value) == (
        "Unknown config key 'OPTIM.LRR' in command-line options. Did you mean 'OPTIM.LR'?"
    )


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("OPTIM:\n  MAX_EPOCHS: 5\n")
    with pytest.raises(ConfigError) as e:
        merge_from_file(get_cfg_default(), str(path))
    assert "Unknown config key 'OPTIM.MAX_EPOCHS'" in str(e.value)
    assert "Did you mean 'OPTIM.MAX_EPOCH'?" in str(e.value)


def test_odd_opts_and_bad_types():
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        merge_from_list(get_cfg_default(), ["OPTIM.LR"])
    with pytest.raises(ConfigError, match="OPTIM.MAX_EPOCH"):
        merge_from_list(get_cfg_default(), ["OPTIM.MAX_EPOCH", "'five'"])


@pytest.fixture
def maple_extender():
    def add_maple(cfg):
        cfg.TRAINER.MAPLE = CN()
        cfg.TRAINER.MAPLE.N_CTX = 2
        cfg.TRAINER.MAPLE.CTX_INIT = "a photo of a"
        cfg.TRAINER.MAPLE.PREC = "fp16"
        cfg.TRAINER.MAPLE.PROMPT_DEPTH = 9

    already = "MaPLe" in CONFIG_EXTENDER_REGISTRY
    if not already:
        register_config_extender("MaPLe")(add_maple)
    yield
    if not already:
        CONFIG_EXTENDER_REGISTRY._obj_map.pop("MaPLe")


def test_upstream_maple_yaml_merges(tmp_path, maple_extender):
    path = tmp_path / "vit_b16_c2_ep5_batch4_2ctx.yaml"
    path.write_text(MAPLE_YAML)
    cfg = apply_config_extenders(get_cfg_default())
    merge_from_file(cfg, str(path))
    assert cfg.TRAINER.MAPLE.PROMPT_DEPTH == 9 and cfg.OPTIM.LR == 0.0035
    assert tuple(cfg.INPUT.TRANSFORMS) == ("random_resized_crop", "random_flip", "normalize")


def test_trainer_section_without_extender_says_so(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("TRAINER:\n  NOSUCH:\n    N_CTX: 2\n")
    with pytest.raises(ConfigError, match="added by the trainer's config extender"):
        merge_from_file(apply_config_extenders(get_cfg_default()), str(path))


def test_merge_order(tmp_path, tiny_world):
    """defaults -> dataset YAML -> method YAML -> CLI flags -> opts."""
    ds = tmp_path / "ds.yaml"
    ds.write_text('DATASET:\n  NAME: "A"\n  ROOT: "from_dataset"\nOPTIM:\n  LR: 0.1\n  MAX_EPOCH: 7\nSEED: 3\n')
    method = tmp_path / "m.yaml"
    method.write_text('OPTIM:\n  LR: 0.2\nDATASET:\n  ROOT: "from_method"\nSEED: 4\n')
    args = build_parser().parse_args([
        "--trainer", "TinyNet", "--dataset-config-file", str(ds), "--config-file", str(method),
        "--root", "from_cli", "--seed", "5", "OPTIM.LR", "0.3",
    ])
    cfg = setup_cfg(args)
    assert cfg.DATASET.NAME == "A"  # dataset yaml only
    assert cfg.OPTIM.MAX_EPOCH == 7  # dataset yaml, untouched later
    assert cfg.DATASET.ROOT == "from_cli"  # CLI flag beats both files
    assert cfg.SEED == 5
    assert cfg.OPTIM.LR == 0.3  # opts beat everything
    assert cfg.is_frozen()
    args = build_parser().parse_args(["--trainer", "TinyNet", "--config-file", str(method)])
    assert setup_cfg(args).SEED == 4  # no --seed flag: the YAML value stands
