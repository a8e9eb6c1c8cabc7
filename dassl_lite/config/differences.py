"""Which keys of a config differ from those a run directory's ``config.yaml`` was made with.

Resuming a run (``engine/resume.py``) and reusing a protocol job's directory
(``protocols/jobs.py``) both refuse, or warn about, a run made with another configuration.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

from ..utils.io import load_yaml, plain_config

# Config keys that may differ between invocations without changing what a run computes.
IGNORED_KEYS = ("OUTPUT_DIR", "RESUME", "DATASET.ROOT", "MODEL.BACKBONE.CACHE_DIR",
                "DATALOADER.NUM_WORKERS",
                "TEST.ANOMALY.THRESHOLD")  # decisions only: a protocol re-evaluates for another


def _flatten(node: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(node, dict):
        out: Dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def config_differences(cfg, run_dir: str) -> List[Tuple[str, Any, Any]]:
    """``(key, value in run_dir/config.yaml, expected value)`` for every differing key that both
    configs have (except ``IGNORED_KEYS``); empty when the run has no config.yaml."""
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        found = _flatten(load_yaml(f) or {})
    expected = _flatten(plain_config(cfg))
    return [(k, found[k], v) for k, v in expected.items()
            if k in found and k not in IGNORED_KEYS and found[k] != v]
