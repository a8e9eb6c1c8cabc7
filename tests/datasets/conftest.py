"""Offline guard and config helper for the benchmark dataset tests."""
import pytest

import datasets  # noqa: F401  (registers the datasets)
from dassl_lite.config import get_cfg_default, merge_from_list
from dassl_lite.registry import DATASET_REGISTRY


def go_offline(monkeypatch, calls):
    """Make ``gdown.download`` fail as it does offline, recording the keyword arguments of calls."""
    import gdown

    def offline(*args, **kwargs):
        calls.append(kwargs)
        raise ConnectionError("Failed to resolve 'drive.google.com' (no network in tests)")

    monkeypatch.setattr(gdown, "download", offline)


@pytest.fixture(autouse=True)
def gdown_calls(monkeypatch):
    """No test touches the network; the calls gdown got. A test may replace gdown.download again."""
    calls = []
    go_offline(monkeypatch, calls)
    return calls


def make_cfg(name, root, *opts):
    cfg = get_cfg_default()
    merge_from_list(cfg, ["DATASET.NAME", name, "DATASET.ROOT", str(root), "SEED", "1", *opts])
    return cfg


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """``built(name) -> (root, Mini)``: the miniature of ``name``, made and loaded once per session
    (so its split file is saved). Tests may add few-shot caches but must not change it otherwise."""
    from tests.datasets.miniatures import MAKERS

    cache = {}

    def _built(name):
        if name not in cache:
            maker, needs_scipy = MAKERS[name]
            if needs_scipy:
                pytest.importorskip("scipy.io", reason="building this split reads .mat files")
            root = tmp_path_factory.mktemp(name)
            mini = maker(str(root))
            with pytest.MonkeyPatch.context() as m:
                go_offline(m, [])
                DATASET_REGISTRY.get(name)(make_cfg(name, root))
            cache[name] = (root, mini)
        return cache[name]

    return _built


@pytest.fixture
def load():
    """``load(name, root, KEY, VALUE, ...)``: the registered dataset ``name`` built from a config."""

    def _load(name, root, *opts):
        return DATASET_REGISTRY.get(name)(make_cfg(name, root, *opts))

    return _load
