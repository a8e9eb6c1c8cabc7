"""Dassl checkpoint layout, written atomically.

``<dir>/<model_name>/model.pth.tar-<epoch>``, ``model-best.pth.tar`` and a ``checkpoint`` file
naming the latest. Each file is a dict with ``state_dict``, ``epoch``, ``optimizer``,
``scheduler``, ``val_result`` and, beyond upstream, ``scaler`` and ``rng_state``.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections import OrderedDict
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from ..errors import DasslLiteError
from ..utils.io import atomic_torch_save, atomic_write_text

logger = logging.getLogger(__name__)

POINTER_FILE = "checkpoint"
BEST_FILE = "model-best.pth.tar"


class CheckpointError(DasslLiteError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


def epoch_file(epoch: int) -> str:
    return f"model.pth.tar-{epoch}"


def trainable_state_dict(module: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """Trainable parameters plus the buffers of modules that own a trainable parameter.

    Frozen backbone weights (hundreds of MB for CLIP) are never saved.
    """
    keep = set()
    for mod_name, mod in module.named_modules():
        own = list(mod.named_parameters(recurse=False))
        trainable = [n for n, p in own if p.requires_grad]
        prefix = f"{mod_name}." if mod_name else ""
        keep.update(prefix + n for n in trainable)
        if trainable:
            keep.update(prefix + n for n, _ in mod.named_buffers(recurse=False))
    full = module.state_dict()
    return OrderedDict((k, v.detach().clone()) for k, v in full.items() if k in keep)


def save_checkpoint(
    state: Dict[str, Any], save_dir: str, is_best: bool = False, model_name: str = ""
) -> str:
    """Write ``state`` as ``save_dir/model_name`` (default ``model.pth.tar-<epoch>``), atomically.

    Updates the ``checkpoint`` pointer unless ``model_name`` is the best-model file.
    Returns the path written.
    """
    os.makedirs(save_dir, exist_ok=True)
    state = dict(state)
    state["state_dict"] = OrderedDict(
        (k[7:] if k.startswith("module.") else k, v) for k, v in state["state_dict"].items()
    )
    name = model_name or epoch_file(state["epoch"])
    path = os.path.join(save_dir, name)
    atomic_torch_save(state, path)
    if name != BEST_FILE:
        atomic_write_text(os.path.join(save_dir, POINTER_FILE), name + "\n")
    if is_best and name != BEST_FILE:
        tmp = os.path.join(save_dir, f".{BEST_FILE}.copy")
        shutil.copyfile(path, tmp)
        os.replace(tmp, os.path.join(save_dir, BEST_FILE))
    return path


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Load a checkpoint file onto the CPU; a missing or unreadable file names the path."""
    if not os.path.isfile(path):
        raise CheckpointError(f"No checkpoint at {path!r}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(f"Cannot read checkpoint {path!r}: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"Checkpoint {path!r} holds a {type(ckpt).__name__}, not a dict")
    if "state_dict" not in ckpt:  # a bare state dict
        ckpt = {"state_dict": ckpt}
    return ckpt


def latest_checkpoint(model_dir: str) -> Optional[str]:
    """The file named by ``model_dir/checkpoint``, or None when there is no pointer file."""
    pointer = os.path.join(model_dir, POINTER_FILE)
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        name = f.readline().strip()
    path = os.path.join(model_dir, name)
    if not os.path.isfile(path):
        raise CheckpointError(f"{pointer!r} names {name!r}, but {path!r} does not exist")
    return path
