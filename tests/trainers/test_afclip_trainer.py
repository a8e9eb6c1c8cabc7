"""The AFCLIP trainer on the toy anomaly world: config checks, text features once per
evaluation, the seeded few-shot memory bank and its fusion with the text scores."""
import os

import pytest
import torch

from dassl_lite.config import ConfigError
from trainers.anomaly.afclip import evenly_spaced

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_layers_of_a_deeper_model_are_refused(toy_anomaly_root, anomaly_trainer, tmp_path):
    with pytest.raises(ConfigError, match=r"TRAINER.AFCLIP.FEATURE_LAYERS \[6, 12, 18, 24\] has "
                                          r"blocks \[6, 12, 18, 24\] that backbone 'ToyCLIP' does "
                                          r"not have: its vision encoder has blocks 1..4 "
                                          r"\(1-based\); e.g. use \[1, 2, 3, 4\]"):
        anomaly_trainer("AFCLIP", toy_anomaly_root, tmp_path, "toy_visa",
                        "TRAINER.AFCLIP.FEATURE_LAYERS", "(6, 12, 18, 24)")
    with pytest.raises(ConfigError, match="AGG_SIZES must be odd sizes >= 1; got \\[1, 2\\]"):
        anomaly_trainer("AFCLIP", toy_anomaly_root, tmp_path, "toy_visa",
                        "TRAINER.AFCLIP.AGG_SIZES", "(1, 2)")
    assert evenly_spaced(24) == [6, 12, 18, 24] and evenly_spaced(12) == [3, 6, 9, 12]


def test_defaults_are_upstream(anomaly_trainer):
    from dassl_lite.cli import build_parser, setup_cfg

    cfg = setup_cfg(build_parser().parse_args(["--trainer", "AFCLIP"]))
    c = cfg.TRAINER.AFCLIP
    assert (c.PROMPT_LEN, tuple(c.FEATURE_LAYERS), tuple(c.AGG_SIZES), c.AGG_SIGMA,
            c.TEMPERATURE, c.FOCAL_GAMMA, c.LAMBDA1, c.LAMBDA2, c.ALPHA, c.PREC) == (
        12, (6, 12, 18, 24), (1, 3, 5), 4.0, 0.07, 4.0, 1.0, 1.0, 0.1, "fp32")
    assert c.SEG_GRADIENT == "upstream"  # the paper's (published) training by default


@pytest.mark.parametrize("name", ["vit_l14_336_518", "toy"])
def test_configs_train_as_published(name):
    """Both AF-CLIP configs: upstream's gradient and upstream's mask resizing."""
    from dassl_lite.config import get_cfg_default, merge_from_file
    from trainers.anomaly.afclip import add_afclip_config

    cfg = get_cfg_default()
    add_afclip_config(cfg)
    merge_from_file(cfg, os.path.join(REPO, "configs", "trainers", "AFCLIP", f"{name}.yaml"))
    assert cfg.TRAINER.AFCLIP.SEG_GRADIENT == "upstream"
    assert cfg.INPUT.MASK_INTERPOLATION == "pil_bicubic"


def test_bad_seg_gradient_is_named(toy_anomaly_root, anomaly_trainer, tmp_path):
    with pytest.raises(ConfigError, match="TRAINER.AFCLIP.SEG_GRADIENT must be one of upstream, "
                                          "corrected; got 'fixed'"):
        anomaly_trainer("AFCLIP", toy_anomaly_root, tmp_path, "toy_visa",
                        "TRAINER.AFCLIP.SEG_GRADIENT", "fixed")


def test_state_features_once_per_evaluation(toy_anomaly_root, anomaly_trainer, tmp_path):
    trainer = anomaly_trainer("AFCLIP", toy_anomaly_root, tmp_path, "toy_visa",
                              "DATASET.ANOMALY.CATEGORIES", "('mesh',)",
                              "DATALOADER.TEST.BATCH_SIZE", "4")
    calls = []
    trainer.model.learner.prompt.register_forward_hook(lambda *a: calls.append(1))
    trainer.test()
    assert len(trainer.test_loader) > 1 and len(calls) == 1
    assert trainer.model._text_cache is None  # dropped after the evaluation


def references(trainer):
    return {c: sorted(d.impath for d in trainer.dm.dataset.train_x if d.category == c)
            for c in trainer.dm.dataset.categories}


def test_few_shot_bank_is_seeded_and_fused(toy_anomaly_root, anomaly_trainer, tmp_path):
    opts = ("DATASET.NUM_SHOTS", "2", "DATASET.ANOMALY.CATEGORIES", "('mesh', 'pink_moon')")
    trainer = anomaly_trainer("AFCLIP", toy_anomaly_root, tmp_path / "a", "toy_visa", *opts)
    again = anomaly_trainer("AFCLIP", toy_anomaly_root, tmp_path / "b", "toy_visa", *opts)
    other = anomaly_trainer("AFCLIP", toy_anomaly_root, tmp_path / "c", "toy_visa", *opts,
                            "SEED", "2")
    refs = references(trainer)
    assert all(len(v) == 2 for v in refs.values()) and refs == references(again)
    assert refs != references(other)
    trainer.set_model_mode("eval")
    trainer.before_test()
    assert sorted(trainer.memory.banks) == ["mesh", "pink_moon"]
    assert trainer.memory.banks["mesh"][0].shape == (2 * 64, 192)  # 2 images x 8x8 patches
    batch = next(iter(trainer.test_loader))
    assert len(set(batch["category"])) == 2
    trainer._categories = list(batch["category"])
    with torch.no_grad():
        fused = trainer.model_inference(batch["img"])
        text = trainer.model(batch["img"])
    for i, category in enumerate(batch["category"]):
        blocks = trainer.model.block_tokens(batch["img"][i:i + 1], [1, 2, 3, 4])
        mem = trainer.memory.score(category, blocks)
        torch.testing.assert_close(fused["anomaly_map"][i],
                                   mem["anomaly_map"][0] + 0.1 * text["anomaly_map"][i])
        torch.testing.assert_close(fused["image_score"][i],
                                   mem["image_score"][0] + 0.1 * text["image_score"][i])
    trainer.after_test()
