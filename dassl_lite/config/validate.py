"""Config validation in one place, run once on the frozen config (``tools/train.py``).

Every choice-valued key is checked against its choices and every count against its range; the
message names the key, the value given and the valid set. Registry-valued keys (optimizer,
scheduler, samplers, evaluator, transforms) are checked against what is registered, so a user
plug-in that registers a new name is accepted.
"""
from __future__ import annotations

from typing import Any, Iterable, List, Optional, Sequence

from ..registry import (EVALUATOR_REGISTRY, LR_SCHEDULER_REGISTRY, OPTIMIZER_REGISTRY,
                        SAMPLER_REGISTRY, TRAINER_REGISTRY, TRANSFORM_REGISTRY, closest_name)
from .merge import ConfigError

FINAL_MODEL_CHOICES = ("last_step", "best_val")
SPLIT_CHOICES = ("test", "val")
SUBSAMPLE_CHOICES = ("all", "base", "new")
INTERPOLATION_CHOICES = ("bilinear", "bicubic", "nearest")
WARMUP_TYPE_CHOICES = ("linear", "constant")
COUNT_ITER_CHOICES = ("train_x", "train_u", "smaller_one")
FEATURE_CACHE_DTYPES = ("auto", "fp16", "fp32")
VTAB_MODES = ("final", "tune")  # DATASET.VTAB.MODE (datasets/vtab_tasks.py's MODES)
PRECISIONS = ("fp16", "fp32", "amp", "bf16")  # a trainer's PREC (see engine/precision.py)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_choice(key: str, value: Any, choices: Iterable[str]) -> None:
    """``value`` must be one of ``choices``."""
    choices = list(choices)
    if value in choices:
        return
    guess = closest_name(str(value), choices) if isinstance(value, str) else None
    hint = f" Did you mean {guess!r}?" if guess else ""
    raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}.{hint}")


def check_int(key: str, value: Any, minimum: int, allowed: Sequence[int] = (),
              meaning: str = "") -> None:
    """``value`` must be an int >= ``minimum`` (or one of ``allowed``)."""
    if _is_int(value) and (value >= minimum or value in allowed):
        return
    extra = "".join(f" or {a}" for a in allowed)
    note = f" ({meaning})" if meaning else ""
    raise ConfigError(f"{key} must be an integer >= {minimum}{extra}{note}; got {value!r}")


def check_number(key: str, value: Any, minimum: float, maximum: Optional[float] = None,
                 exclusive_min: bool = False) -> None:
    """``value`` must be a number in ``[minimum, maximum]`` (``(minimum, ...`` if exclusive)."""
    ok = _is_number(value) and (value > minimum if exclusive_min else value >= minimum)
    ok = ok and (maximum is None or value <= maximum)
    if ok:
        return
    low = f"> {minimum}" if exclusive_min else f">= {minimum}"
    rng = f"{low}" + (f" and <= {maximum}" if maximum is not None else "")
    raise ConfigError(f"{key} must be a number {rng}; got {value!r}")


def _registered(registry_module: str, registry) -> List[str]:
    import importlib

    importlib.import_module(registry_module)  # the module that registers the built-in names
    return registry.names()


def _check_registry_keys(cfg) -> None:
    check_choice("OPTIM.NAME", cfg.OPTIM.NAME, _registered("dassl_lite.optim", OPTIMIZER_REGISTRY))
    check_choice("OPTIM.LR_SCHEDULER", cfg.OPTIM.LR_SCHEDULER,
                 _registered("dassl_lite.optim", LR_SCHEDULER_REGISTRY))
    samplers = _registered("dassl_lite.data.samplers", SAMPLER_REGISTRY)
    for loader in ("TRAIN_X", "TRAIN_U", "TEST"):
        check_choice(f"DATALOADER.{loader}.SAMPLER", cfg.DATALOADER[loader].SAMPLER, samplers)
    check_choice("TEST.EVALUATOR", cfg.TEST.EVALUATOR,
                 _registered("dassl_lite.evaluation", EVALUATOR_REGISTRY))
    transforms = _registered("dassl_lite.data.transforms", TRANSFORM_REGISTRY)
    for name in cfg.INPUT.TRANSFORMS:
        check_choice("INPUT.TRANSFORMS entry", name, transforms)


def _check_choices(cfg) -> None:
    check_choice("TEST.FINAL_MODEL", cfg.TEST.FINAL_MODEL, FINAL_MODEL_CHOICES)
    check_choice("TEST.SPLIT", cfg.TEST.SPLIT, SPLIT_CHOICES)
    check_choice("DATASET.SUBSAMPLE_CLASSES", cfg.DATASET.SUBSAMPLE_CLASSES, SUBSAMPLE_CHOICES)
    check_choice("DATASET.VTAB.MODE", cfg.DATASET.VTAB.MODE, VTAB_MODES)
    check_choice("INPUT.INTERPOLATION", cfg.INPUT.INTERPOLATION, INTERPOLATION_CHOICES)
    check_choice("OPTIM.WARMUP_TYPE", cfg.OPTIM.WARMUP_TYPE, WARMUP_TYPE_CHOICES)
    check_choice("TRAIN.COUNT_ITER", cfg.TRAIN.COUNT_ITER, COUNT_ITER_CHOICES)
    check_choice("DATALOADER.FEATURE_CACHE.DTYPE", cfg.DATALOADER.FEATURE_CACHE.DTYPE,
                 FEATURE_CACHE_DTYPES)


def _check_counts(cfg, training: bool) -> None:
    check_int("DATASET.NUM_SHOTS", cfg.DATASET.NUM_SHOTS, 1, allowed=(-1, 0),
              meaning="images per class; -1 or 0: all")
    for loader in ("TRAIN_X", "TRAIN_U", "TEST"):
        check_int(f"DATALOADER.{loader}.BATCH_SIZE", cfg.DATALOADER[loader].BATCH_SIZE, 1)
    check_int("DATALOADER.NUM_WORKERS", cfg.DATALOADER.NUM_WORKERS, 0)
    check_int("DATALOADER.K_TRANSFORMS", cfg.DATALOADER.K_TRANSFORMS, 1)
    check_int("DATALOADER.FEATURE_CACHE.TRAIN_VIEWS", cfg.DATALOADER.FEATURE_CACHE.TRAIN_VIEWS, 0,
              meaning="0: train on fresh augmentations")
    check_number("DATALOADER.FEATURE_CACHE.MAX_GB", cfg.DATALOADER.FEATURE_CACHE.MAX_GB, 0.0,
                 exclusive_min=True)
    size = tuple(cfg.INPUT.SIZE)
    if len(size) != 2 or not all(_is_int(v) and v > 0 for v in size):
        raise ConfigError(f"INPUT.SIZE must be (height, width), two integers >= 1; "
                          f"got {cfg.INPUT.SIZE!r}")
    check_number("OPTIM.LR", cfg.OPTIM.LR, 0.0, exclusive_min=True)
    check_number("OPTIM.WEIGHT_DECAY", cfg.OPTIM.WEIGHT_DECAY, 0.0)
    check_number("DATASET.VAL_PERCENT", cfg.DATASET.VAL_PERCENT, 0.0, 1.0)
    if training:
        check_int("OPTIM.MAX_EPOCH", cfg.OPTIM.MAX_EPOCH, 1,
                  meaning="0 would evaluate an untrained model")


def _check_precision(cfg) -> None:
    key = getattr(TRAINER_REGISTRY.get(cfg.TRAINER.NAME), "precision_key", None)
    if key:
        node = cfg
        for part in key.split("."):
            node = node[part]
        check_choice(key, node, PRECISIONS)


def validate_cfg(cfg, training: bool = True) -> None:
    """Check every choice and count of the frozen ``cfg``; raises ConfigError on the first bad
    value. ``training``: the run trains (``OPTIM.MAX_EPOCH`` must then be >= 1)."""
    _check_choices(cfg)
    _check_counts(cfg, training)
    _check_registry_keys(cfg)
    _check_precision(cfg)
