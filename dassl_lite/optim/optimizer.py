"""Optimizers by Dassl's names (``OPTIM.NAME``), built over the trainable parameters only.

Registered in ``OPTIMIZER_REGISTRY``: sgd, adam, amsgrad, adamw, rmsprop, radam. Each entry is a
function ``(param_groups, optim_cfg) -> torch.optim.Optimizer`` reading the ``OPTIM`` keys that
Dassl reads, so a method can register its own optimizer the same way.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, List, Optional, Union

import torch
from torch import nn

from ..registry import OPTIMIZER_REGISTRY

logger = logging.getLogger(__name__)

__all__ = ["build_optimizer"]

ParamGroups = List[Dict[str, Any]]


@OPTIMIZER_REGISTRY.register(name="sgd")
def _sgd(params: ParamGroups, cfg) -> torch.optim.Optimizer:
    """SGD with momentum, dampening and Nesterov from the config."""
    return torch.optim.SGD(
        params,
        lr=cfg.LR,
        momentum=cfg.MOMENTUM,
        weight_decay=cfg.WEIGHT_DECAY,
        dampening=cfg.SGD_DAMPNING,
        nesterov=cfg.SGD_NESTEROV,
    )


@OPTIMIZER_REGISTRY.register(name="adam")
def _adam(params: ParamGroups, cfg) -> torch.optim.Optimizer:
    """Adam (L2 weight decay added to the gradient, as torch.optim.Adam does)."""
    betas = (cfg.ADAM_BETA1, cfg.ADAM_BETA2)
    return torch.optim.Adam(params, lr=cfg.LR, weight_decay=cfg.WEIGHT_DECAY, betas=betas)


@OPTIMIZER_REGISTRY.register(name="amsgrad")
def _amsgrad(params: ParamGroups, cfg) -> torch.optim.Optimizer:
    """Adam with the AMSGrad variant."""
    betas = (cfg.ADAM_BETA1, cfg.ADAM_BETA2)
    return torch.optim.Adam(
        params, lr=cfg.LR, weight_decay=cfg.WEIGHT_DECAY, betas=betas, amsgrad=True
    )


@OPTIMIZER_REGISTRY.register(name="adamw")
def _adamw(params: ParamGroups, cfg) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay)."""
    betas = (cfg.ADAM_BETA1, cfg.ADAM_BETA2)
    return torch.optim.AdamW(params, lr=cfg.LR, weight_decay=cfg.WEIGHT_DECAY, betas=betas)


@OPTIMIZER_REGISTRY.register(name="rmsprop")
def _rmsprop(params: ParamGroups, cfg) -> torch.optim.Optimizer:
    """RMSprop with momentum and smoothing constant ``RMSPROP_ALPHA``."""
    return torch.optim.RMSprop(
        params,
        lr=cfg.LR,
        momentum=cfg.MOMENTUM,
        weight_decay=cfg.WEIGHT_DECAY,
        alpha=cfg.RMSPROP_ALPHA,
    )


@OPTIMIZER_REGISTRY.register(name="radam")
def _radam(params: ParamGroups, cfg) -> torch.optim.Optimizer:
    """torch.optim.RAdam; weight decay decoupled (``p -= lr * wd * p``) like Dassl's own RAdam."""
    betas = (cfg.ADAM_BETA1, cfg.ADAM_BETA2)
    return torch.optim.RAdam(
        params,
        lr=cfg.LR,
        weight_decay=cfg.WEIGHT_DECAY,
        betas=betas,
        decoupled_weight_decay=True,
    )


def build_optimizer(
    model_or_params: Union[nn.Module, Iterable[Any]],
    optim_cfg,
    param_groups: Optional[Iterable[Any]] = None,
) -> torch.optim.Optimizer:
    """Build the optimizer named by ``optim_cfg.NAME`` (Dassl's ``build_optimizer``).

    Args:
        model_or_params: an ``nn.Module`` or an iterable of parameters / param-group dicts.
        optim_cfg: the ``cfg.OPTIM`` node.
        param_groups: if given, optimized as they are and ``model_or_params`` is ignored
            (``OPTIM.STAGED_LR`` is then ignored with a warning, as in Dassl).

    Only parameters with ``requires_grad`` are handed to the optimizer. With ``OPTIM.STAGED_LR``
    the model's direct children named in ``OPTIM.NEW_LAYERS`` form a group at ``OPTIM.LR``; every
    other parameter forms a first group at ``OPTIM.LR * OPTIM.BASE_LR_MULT``.

    Raises:
        KeyError: unknown ``OPTIM.NAME`` (names the closest registered one).
        ValueError: no trainable parameter, or ``NEW_LAYERS`` names a missing child module.
        TypeError: ``STAGED_LR`` with something other than an ``nn.Module``.
    """
    make = OPTIMIZER_REGISTRY.get(optim_cfg.NAME)
    if param_groups is not None:
        if optim_cfg.STAGED_LR:
            logger.warning(
                "OPTIM.STAGED_LR is ignored because param_groups were given; "
                "set the per-group lr in param_groups yourself"
            )
        groups = param_groups
    elif optim_cfg.STAGED_LR:
        groups = _staged_groups(model_or_params, optim_cfg)
    elif isinstance(model_or_params, nn.Module):
        groups = model_or_params.parameters()
    else:
        groups = model_or_params
    return make(_trainable_groups(groups), optim_cfg)


def _trainable_groups(params: Iterable[Any]) -> ParamGroups:
    """Param-group dicts holding only parameters that require grad; error if none does."""
    items = list(params)
    if not items or not isinstance(items[0], dict):
        items = [{"params": items}]
    groups, n_given, n_trainable = [], 0, 0
    for group in items:
        group_params = group["params"]
        if isinstance(group_params, torch.Tensor):
            group_params = [group_params]
        group_params = list(group_params)
        trainable = [p for p in group_params if p.requires_grad]
        n_given += len(group_params)
        n_trainable += len(trainable)
        groups.append({**group, "params": trainable})
    if n_trainable == 0:
        raise ValueError(
            "build_optimizer: expected at least one parameter with requires_grad=True; "
            f"got {n_given} parameter(s), none trainable (check what the trainer froze)"
        )
    return groups


def _staged_groups(model: Any, optim_cfg) -> ParamGroups:
    """Dassl's staged lr: [base layers at LR * BASE_LR_MULT, NEW_LAYERS at LR]."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            "OPTIM.STAGED_LR needs an nn.Module to split into base and new layers; "
            f"got {type(model).__name__}"
        )
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    new_layers = optim_cfg.NEW_LAYERS
    if isinstance(new_layers, str):
        new_layers = [new_layers] if new_layers else []
    new_layers = list(new_layers)
    children = dict(model.named_children())
    missing = [name for name in new_layers if name not in children]
    if missing:
        raise ValueError(
            f"OPTIM.NEW_LAYERS must name direct children of {type(model).__name__} "
            f"({', '.join(children) or 'none'}); got {missing}"
        )
    if not new_layers:
        logger.warning(
            "OPTIM.STAGED_LR is on but OPTIM.NEW_LAYERS is empty: all layers get the base lr"
        )
    # Parameters owned by the model itself (not by a child) are base parameters; Dassl drops them.
    base = list(model.parameters(recurse=False))
    new: List[nn.Parameter] = []
    for name, child in children.items():
        (new if name in new_layers else base).extend(child.parameters())
    return [
        {"params": base, "lr": optim_cfg.LR * optim_cfg.BASE_LR_MULT},
        {"params": new},
    ]
