"""Per-image decisions: threshold parsing, the F1-max threshold, scores.txt lines, recorded thresholds."""
import json

import numpy as np
import pytest

from dassl_lite.config import ConfigError, get_cfg_default
from dassl_lite.evaluation.anomaly_metrics import image_metrics
from dassl_lite.evaluation.anomaly_threshold import (decision_stats, f1max_threshold, parse_threshold,
                                                     recorded_threshold, score_lines, threshold_setting)
from dassl_lite.protocols.summary import error_line


def test_parse_threshold():
    assert parse_threshold(None) is None and parse_threshold("") is None
    assert parse_threshold("F1max") == "f1max" and parse_threshold(0.5) == 0.5 and parse_threshold("-2") == -2.0
    with pytest.raises(ConfigError, match=r"--threshold must be a number \(score >= it is anomalous\) or 'f1max'.*; got 'high'"):
        parse_threshold("high", "--threshold")
    with pytest.raises(ConfigError, match=r"TEST.ANOMALY.THRESHOLD must be a finite number or 'f1max'; got 'nan'"):
        parse_threshold("nan")
    cfg = get_cfg_default()
    assert threshold_setting(cfg) == ""
    cfg.merge_from_list(["TEST.ANOMALY.THRESHOLD", "0.25"])  # a number from the command line
    assert cfg.TEST.ANOMALY.THRESHOLD == 0.25 and threshold_setting(cfg) == "0.25"


def test_f1max_threshold_reproduces_the_f1max_point():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = labels * 0.8 + rng.normal(0, 0.5, 200)
    t = f1max_threshold(labels, scores)
    stats = decision_stats(labels, scores, t)
    assert stats["f1"] == pytest.approx(100 * image_metrics(labels, scores)["f1max"])
    assert stats["tp"] + stats["fp"] == int((scores >= t).sum())
    assert stats["tp"] + stats["fn"] == int(labels.sum()) and stats["accuracy"] is not None
    with pytest.raises(ValueError, match="needs normal and anomalous images"):
        f1max_threshold([0, 0], [0.1, 0.2])
    assert decision_stats([0, 0], [0.1, 0.2], 0.5)["precision"] is None  # nothing flagged


def test_score_lines_keep_the_old_columns_first():
    paths, scores = ["/a b/x.png", "/y.png", "/z.png"], [0.2, 0.9, 0.5]
    assert score_lines(paths, scores) == ["0.9000 /y.png", "0.5000 /z.png", "0.2000 /a b/x.png"]
    lines = score_lines(paths, scores, [0.5, 0.5, None])
    assert lines == ["0.9000 /y.png anomalous", "0.5000 /z.png undecided", "0.2000 /a b/x.png normal"]
    score, rest = lines[2].split(" ", 1)
    assert rest.rsplit(" ", 1) == ["/a b/x.png", "normal"]  # a path with a space still reads back


def test_recorded_threshold_names_file_and_category(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"threshold": {"mode": "f1max", "per_category": {
        "bottle": {"threshold": 0.7}, "cable": None}}}))
    assert recorded_threshold(str(path), "bottle") == 0.7
    with pytest.raises(ConfigError, match=r"results.json records no threshold for category 'cable'; it has bottle"):
        recorded_threshold(str(path), "cable")
    path.write_text(json.dumps({"image_auroc": 90.0}))
    with pytest.raises(ConfigError, match=r"results.json records no thresholds: evaluate with --threshold f1max"):
        recorded_threshold(str(path), "bottle")
    with pytest.raises(ConfigError, match=r"cannot read a threshold from .*/none.json"):
        recorded_threshold(str(tmp_path / "none.json"), "bottle")


def test_error_line_picks_the_jobs_own_error():
    tail = "INFO loading\nerror: Mask /m.png holds the values {0, 128, 255}\n"
    assert error_line(tail) == "error: Mask /m.png holds the values {0, 128, 255}"
    tb = "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad thing\n"
    assert error_line(tb) == "ValueError: bad thing"
    assert error_line("just a line\n\n") == "just a line" and error_line("") == ""
