"""LinearProbeCLIP: lpclip's C search traced by hand, and the probe's weights from scikit-learn."""
import math

import numpy as np
import pytest
import torch

from trainers import linear_probe
from trainers.linear_probe import probe_weights, search_c


@pytest.fixture
def peaked_at_3(monkeypatch):
    """A stand-in fit whose val accuracy is -|log10(C) - log10(3)|: best C is 3."""
    monkeypatch.setattr(linear_probe, "_fit", lambda x, y, c, max_iter: c)
    monkeypatch.setattr(linear_probe, "_accuracy", lambda c, x, y: -abs(math.log10(c / 3)))


@pytest.mark.parametrize("num_step, expected", [
    (0, 1.0),  # the best of C_INIT
    (1, 10.0),  # [0.1, 10]: the right end wins; the range becomes [1, 10]
    (2, 1.0),  # [1, 10]: the left end wins; the range becomes [1, 10**0.5]
    (3, 10 ** 0.5),  # [1, 10**0.5]: the right end wins
])
def test_c_search_follows_lpclip(peaked_at_3, num_step, expected):
    clf, c, acc = search_c((None, None), (None, None), [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6],
                           num_step)
    assert c == pytest.approx(expected) and clf == pytest.approx(expected)
    assert acc == pytest.approx(-abs(math.log10(expected / 3)))


def test_probe_weights_reproduce_sklearn_decisions():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    for n_classes in (2, 3):
        x = rng.normal(size=(30, 4)).astype(np.float32)
        y = np.arange(30) % n_classes
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
        weight, bias = probe_weights(clf, n_classes, 4)
        logits = torch.from_numpy(x) @ weight.t() + bias
        assert weight.shape == (n_classes, 4)
        assert np.array_equal(logits.argmax(1).numpy(), clf.predict(x))
