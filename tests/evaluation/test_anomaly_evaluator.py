"""The AnomalyDetection evaluator: per-category metrics, macro means, errors, heatmap files."""
import numpy as np
import pytest
import torch
from PIL import Image

from dassl_lite.config import ConfigError, get_cfg_default
from dassl_lite.evaluation import ANOMALY_METRIC_KEYS, AnomalyDetection, build_evaluator
from dassl_lite.evaluation.anomaly_maps import map_file_name, overlay
from dassl_lite.evaluation.anomaly_metrics import image_metrics


def make_cfg(tmp_path, *opts):
    cfg = get_cfg_default()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.TEST.EVALUATOR = "AnomalyDetection"
    cfg.TEST.ANOMALY.MAP_SIGMA = 0.0
    cfg.merge_from_list(list(opts))
    return cfg


def batch(category, labels, scores, size=16, offset=0.0, impaths=None):
    """A batch whose maps are perfect (mask + offset) and masks a square per anomalous image."""
    n = len(labels)
    masks = torch.zeros(n, 1, size, size)
    for i, label in enumerate(labels):
        if label:
            masks[i, 0, 4:9, 3 + i % 4:10 + i % 4] = 1
    out = {"image_score": torch.tensor(scores, dtype=torch.float32),
           "anomaly_map": masks[:, 0] + offset}
    gt = {"mask": masks, "label": torch.tensor(labels), "category": [category] * n,
          "impath": impaths or [f"/x/{category}/{i}.png" for i in range(n)]}
    return out, gt


def test_macro_and_micro_averaging_differ(tmp_path):
    """Both categories are perfectly separated on their own (macro 100), but category b's normal
    images score above a's anomalies, so pooling (micro) falls below 100."""
    ev = build_evaluator(make_cfg(tmp_path), categories=["a", "b"])
    assert isinstance(ev, AnomalyDetection)
    a = ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    b = ([0, 0, 1, 1], [5.1, 5.2, 5.8, 5.9])
    ev.process(*batch("a", *a))
    ev.process(*batch("b", *b, offset=5.0))
    results = ev.evaluate()
    assert list(results)[:7] == list(ANOMALY_METRIC_KEYS)
    assert all(results[k] == pytest.approx(100.0) for k in ANOMALY_METRIC_KEYS)
    assert results["per_category"]["b"]["image_auroc"] == 100.0
    micro = image_metrics(np.array(a[0] + b[0]), np.array(a[1] + b[1]))["auroc"]
    assert micro == pytest.approx(0.75) and 100 * micro < results["image_auroc"]
    assert results["num_images"] == 8 and results["aupro_mode"] == "exact (FPR limit 0.3)"


def test_per_category_values_and_map_resizing(tmp_path):
    ev = AnomalyDetection(make_cfg(tmp_path, "TEST.ANOMALY.AUPRO", "legacy200",
                                   "TEST.ANOMALY.AUPRO_NORM", "max"))
    out, gt = batch("a", [0, 1, 1, 0], [0.3, 0.2, 0.9, 0.1])
    out["anomaly_map"] = out["anomaly_map"][:, ::2, ::2]  # half resolution: resized to 16 px
    ev.process(out, gt)
    res = ev.evaluate()
    assert res["image_auroc"] == pytest.approx(75.0)  # one anomaly (0.2) below a normal (0.3)
    assert 90 < res["pixel_auroc"] <= 100 and res["aupro_mode"] == "legacy200 (FPR < 0.3, max normalised)"


def test_errors(tmp_path):
    ev = AnomalyDetection(make_cfg(tmp_path), categories=["a"])
    with pytest.raises(RuntimeError, match="needs at least one processed sample"):
        ev.evaluate()
    out, gt = batch("z", [0, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"category 'z' is not among the evaluator's categories \['a'\]"):
        ev.process(out, gt)
    with pytest.raises(ValueError, match=r"expects model_output \{'image_score': \[B\], 'anomaly_map': \[B, H, W\]\}; got \['map'\]"):
        ev.process({"map": out["anomaly_map"]}, gt)
    with pytest.raises(ValueError, match=r"expected image_score \[B\] and anomaly_map \[B, H, W\]; got \[2\] and \[3, 16, 16\]"):
        ev.process({"image_score": out["image_score"], "anomaly_map": torch.zeros(3, 16, 16)}, gt)
    with pytest.raises(ConfigError, match="TEST.ANOMALY.AUPRO must be one of exact, legacy200; got 'pro'"):
        AnomalyDetection(make_cfg(tmp_path, "TEST.ANOMALY.AUPRO", "pro"))


def test_save_maps_writes_overlays_and_a_grid(tmp_path):
    paths = []
    for i in range(4):
        path = tmp_path / "imgs" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)).save(path)
        paths.append(str(path))
    ev = AnomalyDetection(make_cfg(tmp_path / "out", "TEST.ANOMALY.SAVE_MAPS", "True"))
    ev.process(*batch("a", [0, 1, 1, 0], [0.1, 0.8, 0.9, 0.2], impaths=paths))
    ev.evaluate()
    written = sorted(p.name for p in (tmp_path / "out" / "maps" / "a").iterdir())
    assert written == ["grid.png", "imgs_0.png", "imgs_1.png", "imgs_2.png", "imgs_3.png"]
    over = np.asarray(Image.open(tmp_path / "out" / "maps" / "a" / "imgs_1.png"))
    assert over.shape == (16, 16, 3)  # the map's size
    plain = np.asarray(Image.open(paths[1]).resize((16, 16)))
    assert np.abs(over.astype(int) - plain).max() > 50  # the overlay is not the image
    assert (over[4, 4:11] == 255).all()  # the mask's top edge: white contour
    grid = np.asarray(Image.open(tmp_path / "out" / "maps" / "a" / "grid.png").convert("RGB"))
    # 4 tiles of 128 + 4 px padding, the colour bar's 64 px; rows: tile + 3 caption lines
    assert grid.shape == (4 + 128 + 4 + 3 * 13, 4 * 132 + 4 + 64, 3)
    caption = grid[4 + 128 + 1:4 + 128 + 4 + 3 * 13, 4:132]
    assert (caption.min(axis=2) < 100).mean() > 0.03  # text under the first tile
    bar_x = 4 * 132 + 4 + 4 + 7  # inside the colour bar
    column = [tuple(c) for c in grid[:, bar_x]]
    red, blue = column.index((200, 0, 0)), column.index((0, 0, 143))  # the map's max, min
    assert red < blue and column[red - 1] == (0, 0, 0)  # high values on top, framed


def test_tile_captions_name_image_score_and_ground_truth():
    from dassl_lite.evaluation.anomaly_maps import tile_caption

    assert tile_caption("/d/bottle/test/broken/003.png", 0.81234, 1) == [
        "broken/003.png", "score 0.812", "gt: anomalous"]
    assert tile_caption("/d/good/1.png", 0.1, 0)[2] == "gt: normal"
    assert tile_caption("mine.jpg", 0.5) == ["mine.jpg", "score 0.500"]  # no ground truth


def test_overlay_and_file_names():
    img = Image.new("RGB", (40, 30), (10, 20, 30))
    amap = np.zeros((15, 20), np.float32)
    amap[5:10, 5:10] = 1
    out = overlay(img, amap)
    assert out.size == (20, 15)
    arr = np.asarray(out)
    assert tuple(arr[7, 7]) != tuple(arr[0, 0])  # hot and cold differ
    assert map_file_name("/d/bottle/test/broken_large/000.png") == "broken_large_000.png"


def test_undefined_metrics_name_category_metric_and_reason(tmp_path, caplog):
    """Category 'b' has only normal test images, 'c' anomalous images with empty masks and 'd'
    anomalous images without masks: their metrics are None, named in one warning each with the
    reason, and the means are over the categories where each metric is defined."""
    ev = AnomalyDetection(make_cfg(tmp_path), categories=["a", "b", "c", "d"])
    ev.process(*batch("a", [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]))
    ev.process(*batch("b", [0, 0], [0.1, 0.2]))
    out, gt = batch("c", [0, 1], [0.1, 0.9])
    gt["mask"][:] = 0
    ev.process(out, gt)
    out, gt = batch("d", [0, 1, 1], [0.1, 0.3, 0.9])
    gt["mask"][:] = 0
    gt["has_mask"] = torch.tensor([True, False, False])
    ev.process(out, gt)
    with caplog.at_level("WARNING"):
        res = ev.evaluate()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "category 'b': image_auroc, image_ap, image_f1max undefined: only normal test images "
        "(2 normal, 0 anomalous); the mean is over the other 3 of 4 categories",
        "category 'b': pixel_auroc, pixel_ap, pixel_f1max, pixel_aupro undefined: no anomalous "
        "test images, so no defect pixels; the mean is over the other 1 of 4 categories",
        "category 'c': pixel_auroc, pixel_ap, pixel_f1max, pixel_aupro undefined: no defect "
        "pixels: every mask of its 1 anomalous image is empty; the mean is over the other 1 of 4 "
        "categories",
        "category 'd': pixel_auroc, pixel_ap, pixel_f1max, pixel_aupro undefined: 2 of 2 anomalous "
        "images have no mask; the mean is over the other 1 of 4 categories"]
    assert res["per_category"]["b"]["image_auroc"] is None and res["per_category"]["c"]["image_auroc"] == 100.0
    assert res["per_category"]["d"]["pixel_auroc"] is None and res["per_category"]["d"]["image_auroc"] == 100.0
    assert res["pixel_auroc"] == pytest.approx(100.0)  # only category a has pixel metrics
    assert res["undefined"]["b"]["image_auroc"].startswith("only normal test images")
    assert sorted(res["undefined"]) == ["b", "c", "d"]
    only_b = AnomalyDetection(make_cfg(tmp_path))
    only_b.process(*batch("b", [0, 0], [0.1, 0.2]))
    assert all(v is None for k, v in only_b.evaluate().items() if k in ANOMALY_METRIC_KEYS)


def test_threshold_writes_decisions(tmp_path):
    ev = AnomalyDetection(make_cfg(tmp_path, "TEST.ANOMALY.THRESHOLD", "0.5"))
    ev.process(*batch("a", [0, 1, 1, 0], [0.3, 0.2, 0.9, 0.6]))
    res = ev.evaluate()
    lines = (tmp_path / "scores.txt").read_text().splitlines()
    assert lines == ["0.900000 /x/a/2.png anomalous", "0.600000 /x/a/3.png anomalous",
                     "0.300000 /x/a/0.png normal", "0.200000 /x/a/1.png normal"]
    a = res["threshold"]["per_category"]["a"]
    assert (a["tp"], a["fp"], a["fn"], a["tn"]) == (1, 1, 1, 1) and a["f1"] == 50.0
    assert res["threshold"]["mode"] == "value"
    with pytest.raises(ConfigError, match="TEST.ANOMALY.THRESHOLD must be a number"):
        AnomalyDetection(make_cfg(tmp_path, "TEST.ANOMALY.THRESHOLD", "top"))


def test_undefined_everywhere_is_said_so(tmp_path):
    from dassl_lite.evaluation.anomaly import undefined_messages
    from dassl_lite.protocols.anomaly import _metric_stat, anomaly_table

    why = {"blank": {"image_auroc": "only normal test images (1 normal, 0 anomalous)"}}
    assert undefined_messages(why, 1, prefix="- job: ") == [
        "- job: category 'blank': image_auroc undefined: only normal test images (1 normal, 0 "
        "anomalous); no category has them, so their means are undefined too"]
    stat = _metric_stat({1: {"image_auroc": None}, 2: {"image_auroc": None}}, "image_auroc")
    assert stat["undefined"] and stat["missing"] == [] and stat["mean"] is None
    missing = _metric_stat({1: {"image_auroc": None}, 2: None}, "image_auroc")
    assert "undefined" not in missing and missing["missing"] == [1, 2]
    table = anomaly_table({"metrics": ["image_auroc"], "directions": {"a -> b": {"0": {"image_auroc": stat}}}})
    assert "| a -> b      | zero-shot | undefined     |" in table
