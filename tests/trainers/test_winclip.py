"""WinCLIP / WinCLIP+: prompt ensemble, window indices and harmonic aggregation on hand examples,
batched (packed, masked) window encoding == one encoder call per window, bad scales refused, and
WinCLIP+ beating WinCLIP on pixel AUROC on the toy world in both directions."""
import json

import pytest
import torch

from trainers.anomaly import winclip as W


def test_compositional_prompt_ensemble():
    normal, anomalous = W.state_prompts("metal_nut")
    assert (len(W.NORMAL_STATES), len(W.ANOMALOUS_STATES), len(W.TEMPLATES)) == (7, 4, 21)
    assert len(normal) == 7 * 21 == 147 and len(anomalous) == 4 * 21 == 84
    assert normal[0] == "a cropped photo of the metal_nut."  # upstream keeps the underscore
    assert anomalous[21] == "a cropped photo of the metal_nut with flaw."  # state-major order
    assert "a photo of a damaged metal_nut for anomaly detection." in anomalous


def test_window_index_and_harmonic_aggregation_by_hand():
    idx = W.window_index((3, 3), 2)  # four 2x2 windows on a 3x3 grid, row-major
    assert idx.tolist() == [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]
    scores = torch.tensor([[0.5, 0.25, 1.0, 0.5]])
    out = W.harmonic_aggregation(scores, idx, 9)[0]
    assert out.dtype == torch.float64
    expect = [0.5, 2 / (2 + 4), 0.25, 2 / (2 + 1), 4 / (2 + 4 + 1 + 2), 2 / (4 + 2), 1.0,
              2 / (1 + 2), 0.5]
    assert out.tolist() == pytest.approx(expect, abs=1e-12)


def test_batched_windows_equal_one_call_per_window():
    from dassl_lite.clip import load_clip

    visual = load_clip("ToyCLIP").visual.float().eval()
    visual.pos_interpolation = "bicubic"
    scales = (2, 3, 4)  # rows of 17 tokens: one 4x4, one 3x3 (+7 padding), three 2x2 (+2)
    images = torch.randn(2, 3, 96, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = W.embed_tokens(visual, images)
        batched = W.encode_windows(visual, tokens, (6, 5), scales)
        loop = W.encode_windows_loop(visual, tokens, (6, 5), scales)
    for side, a, b in zip(scales, batched, loop):
        assert a.shape == b.shape == (2, (7 - side) * (6 - side), visual.output_dim)
        assert (a - b).abs().max() < 1e-5
    assert (batched[0][0] - batched[0][1]).abs().max() > 1e-3  # images differ


def test_scale_larger_than_the_grid_is_refused(toy_anomaly_root, anomaly_trainer, tmp_path):
    from dassl_lite.config import ConfigError

    with pytest.raises(ConfigError, match=r"TRAINER.WINCLIP.SCALES: a window of 9x9 patches does "
                                          r"not fit the 8x8 patch grid"):
        anomaly_trainer("WinCLIP", toy_anomaly_root, tmp_path, "toy_visa",
                        "TRAINER.WINCLIP.SCALES", "(2, 9)")


@pytest.mark.parametrize("dataset,categories", [("toy_visa", "('pink_moon',)"),
                                                ("toy_mvtec", "('checks',)")])
def test_winclip_plus_beats_winclip_on_pixel_auroc(toy_anomaly_root, anomaly_trainer, tmp_path,
                                                   dataset, categories):
    trainer = anomaly_trainer("WinCLIP", toy_anomaly_root, tmp_path, dataset,
                              "DATASET.NUM_SHOTS", "1", "DATASET.ANOMALY.CATEGORIES", categories)
    auroc = {}
    for name in ("WinCLIP+", "WinCLIP"):  # the same trainer without its memory is WinCLIP
        trainer.test()
        with open(tmp_path / "results.json") as f:
            auroc[name] = json.load(f)["pixel_auroc"]
        trainer.memory = None
    assert auroc["WinCLIP+"] > auroc["WinCLIP"] + 5, auroc
