"""Classification evaluator: numbers on a hand-made case, Dassl's exact log lines, reset, cmat."""
import logging

import numpy as np
import pytest
import torch

from dassl_lite.config import get_cfg_default
from dassl_lite.evaluation import (
    Classification,
    EvaluatorBase,
    build_evaluator,
    confusion_matrix,
    macro_f1_score,
)
from dassl_lite.registry import EVALUATOR_REGISTRY

LOGGER = "dassl_lite.evaluation.evaluator"
LAB2CNAME = {0: "cat", 1: "dog", 2: "bird", 3: "fish"}
# Hand-made case. Class 0: 3 of 4 right; class 1: 2 of 3; class 2: 1 of 3, and one image of
# class 2 is predicted as 3, a label with no ground-truth image.
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 0, 1, 1, 1, 2, 2, 3, 0]
# F1 = 2 tp / (n_true + n_pred): class 0: 6/8, class 1: 4/6, class 2: 2/5; label 3 not counted
MACRO_F1 = (6 / 8 + 4 / 6 + 2 / 5) / 3 * 100  # 60.555...


def make_cfg(tmp_path, per_class=False, cmat=False):
    cfg = get_cfg_default()
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    cfg.TEST.PER_CLASS_RESULT = per_class
    cfg.TEST.COMPUTE_CMAT = cmat
    return cfg


def logits_for(preds, num_classes=4):
    """Logits whose argmax is ``preds`` (one row per prediction)."""
    out = torch.randn(len(preds), num_classes) * 0.1
    out[torch.arange(len(preds)), torch.tensor(preds)] = 5.0
    return out


def feed(evaluator, y_true, y_pred, batch_size=3):
    for i in range(0, len(y_true), batch_size):
        batch = slice(i, i + batch_size)
        evaluator.process(logits_for(y_pred[batch]), torch.tensor(y_true[batch]))


def messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_hand_made_case_numbers_and_lines(tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO, logger=LOGGER)
    evaluator = Classification(make_cfg(tmp_path))
    feed(evaluator, Y_TRUE, Y_PRED)
    results = evaluator.evaluate()
    assert list(results) == ["accuracy", "error", "macro_f1"]
    assert results["accuracy"] == 60.0
    assert results["error"] == 40.0
    assert results["macro_f1"] == pytest.approx(MACRO_F1, rel=1e-12)
    assert messages(caplog) == [
        "=> result",
        "* total: 10",
        "* correct: 6",
        "* accuracy: 60.0%",
        "* error: 40.0%",
        "* macro_f1: 60.6%",
    ]
    assert capsys.readouterr() == ("", "")  # the library logs, it never prints
    assert logging.getLogger(LOGGER).handlers == []


def test_thousands_separator_and_devices_and_dtypes(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    evaluator = build_evaluator(make_cfg(tmp_path), lab2cname=LAB2CNAME)
    # 600 of class 0 all right; 600 of class 1 with 450 right and 150 predicted as 0
    y_true = torch.tensor([0] * 600 + [1] * 600)
    y_pred = [0] * 600 + [1] * 450 + [0] * 150
    logits = logits_for(y_pred, num_classes=2)
    evaluator.process(logits[:700].to(torch.bfloat16), y_true[:700].to(torch.int32))
    evaluator.process(logits[700:].to(torch.float16), y_true[700:])
    results = evaluator.evaluate()
    # F1 class 0: 1200 / (600 + 750); class 1: 900 / (600 + 450)
    assert results["macro_f1"] == pytest.approx((1200 / 1350 + 900 / 1050) / 2 * 100, rel=1e-12)
    assert messages(caplog) == [
        "Loading evaluator: Classification",
        "=> result",
        "* total: 1,200",
        "* correct: 1,050",
        "* accuracy: 87.5%",
        "* error: 12.5%",
        "* macro_f1: 87.3%",
    ]


def test_per_class_result(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    evaluator = Classification(make_cfg(tmp_path, per_class=True), lab2cname=LAB2CNAME)
    feed(evaluator, Y_TRUE, Y_PRED)
    results = evaluator.evaluate()
    assert list(results) == ["accuracy", "error", "macro_f1", "perclass_accuracy"]
    assert results["perclass_accuracy"] == pytest.approx((75 + 200 / 3 + 100 / 3) / 3, rel=1e-12)
    assert messages(caplog)[6:] == [
        "=> per-class result",
        "* class: 0 (cat)\ttotal: 4\tcorrect: 3\tacc: 75.0%",
        "* class: 1 (dog)\ttotal: 3\tcorrect: 2\tacc: 66.7%",
        "* class: 2 (bird)\ttotal: 3\tcorrect: 1\tacc: 33.3%",
        "* average: 58.3%",
    ]


def test_per_class_needs_class_names(tmp_path):
    with pytest.raises(ValueError) as err:
        Classification(make_cfg(tmp_path, per_class=True))
    assert str(err.value) == (
        "TEST.PER_CLASS_RESULT needs lab2cname (a mapping label -> class name); got None"
    )


def test_confusion_matrix_saved_with_normalized_rows(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    evaluator = Classification(make_cfg(tmp_path, cmat=True))
    feed(evaluator, Y_TRUE, Y_PRED)
    evaluator.evaluate()
    path = tmp_path / "out" / "cmat.pt"
    assert messages(caplog)[-1] == f"Confusion matrix is saved to {path}"
    cmat = torch.load(path, weights_only=True)
    expected = torch.tensor(
        [
            [3 / 4, 1 / 4, 0, 0],
            [0, 2 / 3, 1 / 3, 0],
            [1 / 3, 0, 1 / 3, 1 / 3],
            [0, 0, 0, 0],  # label 3 is only predicted, never true
        ],
        dtype=torch.float64,
    )
    assert cmat.dtype == torch.float64
    torch.testing.assert_close(cmat, expected, rtol=1e-15, atol=0)


def test_reset_clears_everything(tmp_path, caplog):
    evaluator = Classification(make_cfg(tmp_path, per_class=True), lab2cname=LAB2CNAME)
    feed(evaluator, Y_TRUE, Y_PRED)
    evaluator.evaluate()
    evaluator.reset()
    with pytest.raises(RuntimeError) as err:
        evaluator.evaluate()
    assert str(err.value) == (
        "evaluate() needs at least one processed sample; got none since the last reset()"
    )
    caplog.set_level(logging.INFO, logger=LOGGER)
    caplog.clear()  # only this evaluation's lines (earlier tests may leave the logger at INFO)
    feed(evaluator, [3, 3], [3, 1])
    results = evaluator.evaluate()
    # only label 3 is true: F1 = 2 * 1 / (2 + 1)
    assert results["accuracy"] == 50.0 and results["perclass_accuracy"] == 50.0
    assert results["macro_f1"] == pytest.approx(200 / 3, rel=1e-12)
    assert messages(caplog)[1:3] == ["* total: 2", "* correct: 1"]
    assert messages(caplog)[6:] == [
        "=> per-class result",
        "* class: 3 (fish)\ttotal: 2\tcorrect: 1\tacc: 50.0%",
        "* average: 50.0%",
    ]


def test_process_checks_shapes_and_labels(tmp_path):
    evaluator = Classification(make_cfg(tmp_path))
    with pytest.raises(ValueError) as err:
        evaluator.process(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))
    assert str(err.value) == "process() expects model_output [B, C] and gt [B]; got (3, 4) and (2,)"
    with pytest.raises(ValueError) as err:
        evaluator.process(torch.zeros(2, 4), torch.tensor([0, -1]))
    assert str(err.value) == "process() expects labels >= 0; got -1"


def test_metrics_against_a_direct_implementation():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 7, 500), rng.integers(0, 9, 500)
    f1s = []
    for c in np.unique(y_true):  # sklearn's definition: precision/recall per label in y_true
        tp = np.sum((y_true == c) & (y_pred == c))
        precision = tp / max(np.sum(y_pred == c), 1)
        recall = tp / np.sum(y_true == c)
        f1s.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    assert macro_f1_score(y_true, y_pred) == pytest.approx(np.mean(f1s), rel=1e-12)
    cmat = confusion_matrix(y_true, y_pred)
    assert cmat.shape == (9, 9)
    np.testing.assert_allclose(cmat[:7].sum(axis=1), 1.0, rtol=1e-12)
    assert cmat[2, 5] == np.sum((y_true == 2) & (y_pred == 5)) / np.sum(y_true == 2)


def test_registry_and_base_class(tmp_path):
    cfg = make_cfg(tmp_path)
    assert isinstance(build_evaluator(cfg), Classification)
    assert issubclass(Classification, EvaluatorBase)
    cfg.TEST.EVALUATOR = "Classificaton"
    with pytest.raises(KeyError) as err:
        build_evaluator(cfg)
    registered = ", ".join(EVALUATOR_REGISTRY.names())
    assert err.value.args[0] == (
        "No evaluator 'Classificaton' in EVALUATOR registry. Did you mean 'Classification'? "
        f"Registered: {registered}"
    )
