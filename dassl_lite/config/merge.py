"""Checked config merging: unknown keys are errors that name the closest valid key."""
from __future__ import annotations

import logging
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import yaml
from yacs.config import CfgNode as CN

from ..errors import DasslLiteError
from ..registry import CONFIG_EXTENDER_REGISTRY, closest_name
from ..utils.io import load_yaml
from .defaults import _C

logger = logging.getLogger(__name__)


class ConfigError(DasslLiteError, ValueError):
    """A config file or option that cannot be merged into the defaults."""


def get_cfg_default() -> CN:
    """A fresh copy of the default config (without trainer sections)."""
    return _C.clone()


def register_config_extender(name: Optional[str] = None) -> Callable:
    """Decorator for ``fn(cfg)`` that adds a trainer's section, e.g. ``cfg.TRAINER.COOP``.

    >>> @register_config_extender("CoOp")
    ... def add_coop_config(cfg): ...
    """

    def deco(fn: Callable) -> Callable:
        CONFIG_EXTENDER_REGISTRY.register(fn, name=name or fn.__name__)
        return fn

    return deco


# String keys whose upstream YAMLs also write a boolean: key -> (value for True, for False).
_BOOL_SPELLINGS: Dict[str, Tuple[str, str]] = {}


def register_bool_spelling(key: str, true_value: str, false_value: str = "") -> None:
    """Let the string key ``key`` (dotted) take upstream's boolean in YAML files and options:
    ``True`` merges as ``true_value``, ``False`` as ``false_value`` (ProGrad's YAMLs write
    ``TRAINER.COOP.CTX_INIT: True`` where CoOp's key holds words)."""
    _BOOL_SPELLINGS[key] = (true_value, false_value)


def _spell_bools(updates: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in updates.items():
        full = f"{prefix}{k}"
        if isinstance(v, dict):
            v = _spell_bools(v, full + ".")
        elif isinstance(v, bool) and full in _BOOL_SPELLINGS:
            v = _BOOL_SPELLINGS[full][0 if v else 1]
        out[k] = v
    return out


def apply_config_extenders(cfg: CN) -> CN:
    """Run every registered extender, so upstream YAMLs of any trainer merge unchanged."""
    for _, extend in CONFIG_EXTENDER_REGISTRY.items():
        extend(cfg)
    return cfg


def flat_keys(node: CN, prefix: str = "") -> List[str]:
    """All leaf keys of ``node`` as dotted paths (``OPTIM.LR``)."""
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.extend(flat_keys(v, full + ".") if isinstance(v, dict) else [full])
    return keys


def _unknown_key_error(key: str, cfg: CN, source: str) -> ConfigError:
    valid = flat_keys(cfg)
    guess = closest_name(key, valid)
    if guess is None:  # compare the last component within the same section
        section, _, leaf = key.rpartition(".")
        siblings = [k for k in valid if k.rpartition(".")[0] == section]
        leaf_guess = closest_name(leaf, [k.rpartition(".")[2] for k in siblings])
        guess = f"{section}.{leaf_guess}" if leaf_guess and section else leaf_guess
    hint = f" Did you mean '{guess}'?" if guess else ""
    trainer_hint = ""
    if key.startswith("TRAINER."):
        trainer_hint = (
            " Trainer sections are added by the trainer's config extender; registered: "
            + (", ".join(CONFIG_EXTENDER_REGISTRY.names()) or "(none)")
        )
    return ConfigError(f"Unknown config key '{key}' in {source}.{hint}{trainer_hint}")


def _check_keys(root: CN, node: CN, updates: dict, source: str, prefix: str = "") -> None:
    for k, v in updates.items():
        full = f"{prefix}{k}"
        if k not in node:
            raise _unknown_key_error(full, root, source)
        if isinstance(v, dict) and isinstance(node[k], CN):
            _check_keys(root, node[k], v, source, full + ".")


def _false_as_empty_string(node: CN, updates: dict) -> None:
    """Upstream YAMLs (TCP's, KgCoOp's) write ``CTX_INIT: False`` for "no initialisation words"
    and read it with ``if ctx_init:``; where our default is a string, ``False`` merges as ``""``
    (the same meaning). ``True`` and every other mismatch stay errors."""
    for k, v in updates.items():
        if k not in node:
            continue
        if isinstance(v, dict) and isinstance(node[k], CN):
            _false_as_empty_string(node[k], v)
        elif v is False and isinstance(node[k], str):
            updates[k] = ""


def _merge(cfg: CN, other: CN, source: str) -> None:
    try:
        cfg.merge_from_other_cfg(other)
    except (ValueError, KeyError, AssertionError) as e:
        raise ConfigError(f"Cannot merge {source}: {e}") from None


def merge_from_file(cfg: CN, path: str) -> CN:
    """Merge a YAML file into ``cfg``; unknown keys and type mismatches raise ConfigError."""
    if not os.path.isfile(path):
        raise ConfigError(f"Config file not found: {path!r}")
    with open(path) as f:
        try:
            data = load_yaml(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"Config file {path!r} is not valid YAML: {e}") from None
    if data is None:  # empty, or only comments: nothing to merge, but say so
        logger.warning(f"Config file {path!r} is empty (or only comments); nothing merged from it")
        return cfg
    if not isinstance(data, dict):  # also 0, false, "" (a scalar is never a config)
        raise ConfigError(f"Config file {path!r} must hold a mapping; got {type(data).__name__}")
    _check_keys(cfg, cfg, data, f"config file {path!r}")
    _false_as_empty_string(cfg, data)
    _merge(cfg, type(cfg)(_spell_bools(data)), f"config file {path!r}")
    return cfg


def merge_from_list(cfg: CN, opts: Sequence[str], source: str = "command-line options") -> CN:
    """Merge ``KEY VALUE`` pairs (as yacs ``merge_from_list``) with checked keys."""
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(
            f"{source} must be KEY VALUE pairs; got an odd number of items: {opts}"
        )
    for key, _ in zip(opts[0::2], opts[1::2]):
        node = cfg
        for part in key.split("."):
            if not isinstance(node, CN) or part not in node:
                raise _unknown_key_error(key, cfg, source)
            node = node[part]
    for i in range(1, len(opts), 2):
        if opts[i - 1] in _BOOL_SPELLINGS and str(opts[i]).strip() in ("True", "False"):
            opts[i] = repr(_BOOL_SPELLINGS[opts[i - 1]][0 if opts[i].strip() == "True" else 1])
    try:
        cfg.merge_from_list(opts)
    except (ValueError, KeyError, AssertionError) as e:
        raise ConfigError(f"Cannot merge {source}: {e}") from None
    return cfg

