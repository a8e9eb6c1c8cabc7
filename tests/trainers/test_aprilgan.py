"""APRILGAN: the maths of ByChelsea/VAND-APRIL-GAN on small cases (upstream's loss lines restated
here, no upstream code needed), its prompt ensemble, the safe converter, and one toy run."""
import importlib.util
import json
import logging
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dassl_lite.engine.anomaly_core import (ReleasedWeightsError, binary_dice_loss,
                                            focal_loss_softmax)
from trainers.anomaly.aprilgan import (APRILGAN, LinearLayer, aprilgan_loss, convert_upstream,
                               memory_map, state_prompts, text_maps)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    "convert_aprilgan", os.path.join(REPO, "tools", "convert_aprilgan.py"))
convert_aprilgan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convert_aprilgan)


def upstream_focal(logit, target, gamma=2, smooth=1e-5):
    """loss.py FocalLoss() (alpha None, balance_index 0, size_average), lines restated."""
    num_class = logit.shape[1]
    logit = logit.view(logit.size(0), logit.size(1), -1)
    logit = logit.permute(0, 2, 1).contiguous()
    logit = logit.view(-1, logit.size(-1))
    target = torch.squeeze(target, 1)
    target = target.view(-1, 1)
    alpha = torch.ones(num_class, 1)
    idx = target.cpu().long()
    one_hot_key = torch.FloatTensor(target.size(0), num_class).zero_()
    one_hot_key = one_hot_key.scatter_(1, idx, 1)
    one_hot_key = torch.clamp(one_hot_key, smooth / (num_class - 1), 1.0 - smooth)
    pt = (one_hot_key * logit).sum(1) + smooth
    logpt = pt.log()
    alpha = torch.squeeze(alpha[idx])
    return (-1 * alpha * torch.pow((1 - pt), gamma) * logpt).mean()


def test_prompt_ensemble_is_state_words_by_templates():
    normal, abnormal = state_prompts("metal_nut")
    assert len(normal) == 7 * 35 and len(abnormal) == 5 * 35
    assert normal[0] == "a bad photo of a metal_nut." and normal[35] == "a bad photo of a flawless metal_nut."
    assert abnormal[-1] == "this is one metal_nut with damage in the scene."


def test_focal_and_dice_match_upstream_lines_and_hand_values():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(3, 2, 5, 5), dim=1)
    gt = (torch.rand(3, 5, 5) > 0.7).float()
    assert torch.allclose(focal_loss_softmax(probs, gt), upstream_focal(probs, gt), atol=1e-7)
    # one pixel, p(abnormal) = 0.8, label abnormal: p_t = 0.8 * (1 - 1e-5) + 0.2 * 1e-5 + 1e-5
    p = torch.tensor([[0.2], [0.8]])[None]
    pt = 0.8 * (1 - 1e-5) + 0.2 * 1e-5 + 1e-5
    assert focal_loss_softmax(p, torch.ones(1, 1)).item() == pytest.approx(
        -(1 - pt) ** 2 * np.log(pt), rel=1e-5)
    # Dice: (2 * 0.5 + 1) / (1.5 + 1 + 1) for image 0, (0 + 1) / (1 + 0 + 1) for image 1
    prob = torch.tensor([[[0.5, 1.0]], [[0.0, 1.0]]])
    target = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]])
    expected = 1 - (2 / 3.5 + 1 / 2) / 2
    assert binary_dice_loss(prob, target).item() == pytest.approx(expected, rel=1e-6)


def test_maps_loss_and_memory_on_a_small_grid():
    torch.manual_seed(0)
    tokens = [torch.randn(2, 1 + 4, 6) for _ in range(3)]  # 2x2 grid, width 6
    layer = LinearLayer(6, 5, 3)
    text = F.normalize(torch.randn(2, 5, 2), dim=1)
    maps = text_maps(layer(tokens), text, (7, 7))
    assert len(maps) == 3 and maps[0].shape == (2, 2, 7, 7)
    assert not torch.allclose(maps[0], maps[1])  # one linear layer per block: distinct maps
    # align_corners=True keeps the corner patches' own probabilities
    p = F.normalize(layer(tokens)[0], dim=-1)
    corner = torch.softmax(100 * p @ text, dim=-1)[:, 0, 1]
    assert torch.allclose(maps[0][:, 1, 0, 0], corner, atol=1e-6)
    masks = torch.zeros(2, 1, 7, 7)
    masks[0, 0, :3, :3] = 1
    terms = aprilgan_loss(maps, masks)
    gt = masks[:, 0]
    focal = sum(upstream_focal(m, gt) for m in maps)
    assert terms["focal"].item() == pytest.approx(focal.item(), rel=1e-6)
    assert terms["loss"].item() == pytest.approx((terms["focal"] + terms["dice"]).item())
    # memory: a test patch equal to a bank entry is 0; the opposite direction is 2
    bank = F.normalize(tokens[0][0, 1:], dim=-1)
    query = tokens[0][:1].clone()  # patch 1 (grid (0, 0)) is the bank entry
    query[0, 2] = -tokens[0][0, 1]  # patch 2 (grid (0, 1)) points the other way
    dist = memory_map([query], [bank[:1]], (2, 2))
    assert dist[0, 0, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert dist[0, 0, 1].item() == pytest.approx(2.0, abs=1e-6)


def test_few_shot_image_score_is_upstream_fusion():
    scores = {"a": [0.2, 0.4, 0.9]}

    class Evaluator:
        def image_scores(self, c):
            return scores[c]

        def set_image_scores(self, c, new):
            scores[c] = new

    trainer = SimpleNamespace(memory={"a": []}, _fewshot={"a": [1.0, 3.0, 2.0]},
                              evaluator=Evaluator())
    APRILGAN.after_test(trainer)
    assert scores["a"] == pytest.approx([0.1, 0.7, 0.7])  # 0.5 * (text + minmax(max map))


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_converter_reads_upstream_checkpoints_safely(tmp_path, caplog):
    layer = LinearLayer(8, 4, 2)
    path = tmp_path / "epoch_3.pth"
    torch.save({"trainable_linearlayer": layer.state_dict()}, path)
    state = convert_upstream(str(path), [6, 12])
    assert all(torch.equal(state[k], v) for k, v in layer.state_dict().items())
    with pytest.raises(ReleasedWeightsError, match=r"fc.1.weight.\] differ from the 4 layers of FEATURES_LIST \[6, 12, 18, 24\].*fc.3.bias"):
        convert_upstream(str(path), [6, 12, 18, 24])
    torch.save({"trainable_linearlayer": {"x": Exploit()}}, tmp_path / "evil.pth")
    with pytest.raises(ReleasedWeightsError, match="weights_only=True: .*GLOBAL posix.system"):
        convert_upstream(str(tmp_path / "evil.pth"), [6, 12])
    with pytest.raises(ReleasedWeightsError, match="No released APRIL-GAN checkpoint at"):
        convert_upstream(str(tmp_path / "none.pth"), [6, 12])
    out = tmp_path / "conv"
    argv = ["--checkpoint", str(path), "--output-dir", str(out), "--features-list", "6", "12"]
    assert convert_aprilgan.main(argv) == 0
    saved = torch.load(out / "LinearLayer" / "model.pth.tar-3", weights_only=True)
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in layer.state_dict().items())
    with caplog.at_level(logging.ERROR, logger="convert_aprilgan"):
        assert convert_aprilgan.main(argv) == 2
    assert "LinearLayer holds files already" in caplog.text


def test_toy_step_checkpoint_and_few_shot_evaluation(toy_anomaly_root, anomaly_trainer, tmp_path):
    trainer = anomaly_trainer("APRILGAN", toy_anomaly_root, tmp_path, "toy_visa",
                              "DATASET.NUM_SHOTS", "1", "DATASET.ANOMALY.CATEGORIES", "('mesh',)")
    batch = next(iter(trainer.test_loader))
    before = [p.detach().clone() for p in trainer.model.learner.parameters()]
    terms = trainer.forward_backward(batch)
    assert set(terms) == {"loss", "focal", "dice"} and np.isfinite(terms["loss"])
    assert all(not torch.equal(a, b) for a, b in zip(before, trainer.model.learner.parameters()))
    trainer.save_model(0, str(tmp_path))
    files = os.listdir(tmp_path / "LinearLayer")
    saved = torch.load(tmp_path / "LinearLayer" / sorted(f for f in files if "tar" in f)[0],
                       weights_only=True)
    assert sorted(saved["state_dict"]) == [f"fc.{i}.{p}" for i in range(4) for p in ("bias", "weight")]
    trainer.test()
    with open(tmp_path / "results.json") as f:
        res = json.load(f)
    assert res["trainer"] == "APRILGAN" and res["num_shots"] == 1
    assert list(res["per_category"]) == ["mesh"] and 0 <= res["pixel_auroc"] <= 100


def test_bad_settings_are_named(toy_anomaly_root, anomaly_trainer, tmp_path):
    from dassl_lite.config import ConfigError

    with pytest.raises(ConfigError, match=r"FEATURES_LIST \[1, 9\] has blocks \[9\].*1..4"):
        anomaly_trainer("APRILGAN", toy_anomaly_root, tmp_path, "toy_visa",
                        "TRAINER.APRILGAN.FEATURES_LIST", "(1, 9)")
    with pytest.raises(ConfigError, match="TRAINER.APRILGAN.GELU must be 'upstream' or "
                                          "'backbone'; got 'quick'"):
        anomaly_trainer("APRILGAN", toy_anomaly_root, tmp_path, "toy_visa",
                        "TRAINER.APRILGAN.GELU", "quick")
    with pytest.raises(ConfigError, match=r"TRAINER.APRILGAN.AUG_RATE must be a number >= 0.0 "
                                          r"and <= 1.0; got 1.5"):
        anomaly_trainer("APRILGAN", toy_anomaly_root, tmp_path, "toy_visa",
                        "TRAINER.APRILGAN.AUG_RATE", "1.5")


def test_aug_rate_makes_mosaics_in_the_training_loader_only(toy_anomaly_root, anomaly_trainer,
                                                             tmp_path):
    trainer = anomaly_trainer("APRILGAN", toy_anomaly_root, tmp_path, "toy_visa",
                              "TRAINER.APRILGAN.AUG_RATE", "1.0",
                              "DATASET.ANOMALY.CATEGORIES", "('mesh',)")
    train, test = trainer.train_loader_x.dataset, trainer.test_loader.dataset
    assert (train.mosaic_rate, test.mosaic_rate) == (1.0, 0.0)
    item = train[0]
    assert item["defect"] == "mosaic" and item["img"].shape == (3, 128, 128)
    assert test[0]["defect"] != "mosaic"
    # the encoder as upstream's open_clip rebuild at another size: exact GELU, antialiased resize
    blocks = list(trainer.clip.visual.transformer.resblocks) + list(trainer.clip.transformer.resblocks)
    assert all(type(b.mlp.gelu) is torch.nn.GELU for b in blocks)
    assert trainer.clip.visual.pos_interpolation == "bicubic_antialias"


def test_benchmark_section_runs_at_tiny_shapes(benchmark, capsys):
    argv = ["--only", "aprilgan", "--reps", "1", "--aprilgan-layers", "1", "--aprilgan-size",
            "42", "--aprilgan-batch", "1"]
    assert benchmark.main(argv) == 0
    out = capsys.readouterr().out
    for case in ("train step", "eval batch, zero-shot", "eval batch, 1-shot"):
        assert f"| aprilgan  | {case}" in out
    assert "1x3x42x42, 1 blocks of ViT-L/14 (maps from [1]), 10 tokens" in out
