"""Dassl checkpoint layout, written atomically.

``<dir>/<model_name>/model.pth.tar-<epoch>``, ``model-best.pth.tar`` and a ``checkpoint`` file
naming the latest. Each file is a dict with ``state_dict``, ``epoch``, ``optimizer``,
``scheduler``, ``val_result`` and, beyond upstream, ``scaler`` and ``rng_state``. Everything in it
is plain data (tensors, numbers, strings, containers; the NumPy RNG state as a tensor), so it loads
with ``torch.load(weights_only=True)``; loading goes through :func:`safe_torch_load` (upstream
files with scheduler objects load through a small allow-list, anything else is refused).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from collections import OrderedDict
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from ..errors import DasslLiteError
from ..utils.io import atomic_torch_save, atomic_write, atomic_write_text
from ..utils.safe_load import safe_torch_load

logger = logging.getLogger(__name__)

POINTER_FILE = "checkpoint"
BEST_FILE = "model-best.pth.tar"
EPOCH_FILE = re.compile(r"^model\.pth\.tar-(\d+)$")
# Temporary files of an interrupted atomic write (utils.io) or best-model copy in a model folder.
STALE_TEMP = re.compile(
    r"^\.(model\.pth\.tar-\d+|model-best\.pth\.tar|checkpoint)\..*\.tmp$"
    r"|^\.model-best\.pth\.tar\.copy$"
)


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
    remove_stale_temp_files(save_dir)
    state = dict(state)
    if state.get("rng_state") is not None:
        state["rng_state"] = rng_state_to_plain(state["rng_state"])
    state["state_dict"] = OrderedDict(
        (k[7:] if k.startswith("module.") else k, v) for k, v in state["state_dict"].items()
    )
    name = model_name or epoch_file(state["epoch"])
    path = os.path.join(save_dir, name)
    atomic_torch_save(state, path)
    if name != BEST_FILE:
        atomic_write_text(os.path.join(save_dir, POINTER_FILE), name + "\n")
    if is_best and name != BEST_FILE:
        with open(path, "rb") as src:
            atomic_write(os.path.join(save_dir, BEST_FILE),
                         lambda f: shutil.copyfileobj(src, f), size=os.path.getsize(path))
    return path


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Load a checkpoint file onto the CPU; a missing or unreadable file names the path."""
    if not os.path.isfile(path):
        raise CheckpointError(f"No checkpoint at {path!r}")
    ckpt = safe_torch_load(path, "checkpoint", error=CheckpointError)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"Checkpoint {path!r} holds a {type(ckpt).__name__}, not a dict")
    if "state_dict" not in ckpt:  # a bare state dict
        ckpt = {"state_dict": ckpt}
    if ckpt.get("rng_state") is not None:
        ckpt["rng_state"] = rng_state_from_plain(ckpt["rng_state"])
    return ckpt


def rng_state_to_plain(rng: Dict[str, Any]) -> Dict[str, Any]:
    """The RNG states of ``utils.seed.get_rng_state`` with the NumPy key array as a tensor."""
    rng = dict(rng)
    if "numpy" in rng and not isinstance(rng["numpy"][1], torch.Tensor):
        name, keys, pos, has_gauss, cached = rng["numpy"]
        rng["numpy"] = (str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                        int(pos), int(has_gauss), float(cached))
    return rng


def rng_state_from_plain(rng: Dict[str, Any]) -> Dict[str, Any]:
    """Inverse of :func:`rng_state_to_plain` (what ``np.random.set_state`` accepts)."""
    rng = dict(rng)
    if "numpy" in rng and isinstance(rng["numpy"][1], torch.Tensor):
        name, keys, pos, has_gauss, cached = rng["numpy"]
        rng["numpy"] = (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)
    return rng


def remove_stale_temp_files(model_dir: str) -> List[str]:
    """Delete temporary files a killed checkpoint write left in ``model_dir``; returns them."""
    if not os.path.isdir(model_dir):
        return []
    removed = []
    for name in sorted(os.listdir(model_dir)):
        if STALE_TEMP.match(name):
            path = os.path.join(model_dir, name)
            try:
                os.remove(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    if removed:
        logger.info(f"Removed {len(removed)} leftover temporary file(s) of an interrupted "
                    f"checkpoint write: {', '.join(os.path.basename(p) for p in removed)}")
    return removed


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


def epoch_files(model_dir: str) -> Dict[int, str]:
    """``{epoch: path}`` of every ``model.pth.tar-<epoch>`` in ``model_dir``."""
    if not os.path.isdir(model_dir):
        return {}
    return {int(m.group(1)): os.path.join(model_dir, m.group(0))
            for m in map(EPOCH_FILE.match, os.listdir(model_dir)) if m}


_RECOVERED: set = set()  # newer epoch files already reported (resume is checked, then done)


def resume_checkpoint(model_dir: str) -> Optional[str]:
    """The checkpoint a resumed run continues from: the pointer's file, unless a newer
    ``model.pth.tar-<N>`` loads (a run killed after saving epoch N but before updating the
    ``checkpoint`` pointer, or before writing its first pointer). None: no checkpoint at all.

    Epoch files are written atomically, so a present one is complete; each newer candidate is
    still loaded to check, and one that does not load is skipped with a warning naming it."""
    pointed = latest_checkpoint(model_dir)  # raises when the pointer names a missing file
    match = EPOCH_FILE.match(os.path.basename(pointed)) if pointed else None
    since = int(match.group(1)) if match else (0 if pointed else -1)
    newer = sorted(((e, p) for e, p in epoch_files(model_dir).items() if e > since), reverse=True)
    unreadable = []
    for epoch, path in newer:
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as e:
            unreadable.append(path)
            logger.warning(f"Skipping {path} on resume: {e}")
            continue
        if ckpt.get("epoch") not in (None, epoch):
            unreadable.append(path)
            logger.warning(f"Skipping {path} on resume: it holds epoch {ckpt.get('epoch')}")
            continue
        said = (f"{os.path.join(model_dir, POINTER_FILE)} names {os.path.basename(pointed)}"
                if pointed else f"{model_dir} has no {POINTER_FILE} pointer")
        if (path, pointed) in _RECOVERED:
            return path
        _RECOVERED.add((path, pointed))
        logger.warning(f"{said}, but {os.path.basename(path)} is newer and loads (a run stopped "
                       f"between saving it and updating the pointer): resuming from {path}")
        return path
    if pointed is None and unreadable:
        raise CheckpointError(
            f"Cannot resume from {model_dir}: it has no {POINTER_FILE} pointer and none of its "
            f"epoch files loads ({', '.join(os.path.basename(p) for p in unreadable)}); move "
            f"them away to start afresh, or use a new --output-dir")
    return pointed


def _is_training_checkpoint(path: str) -> bool:
    """Whether ``path`` holds a training checkpoint (optimizer state, RNG state), not an export
    (which has ``optimizer: None``); a file that does not load counts as one (not ours)."""
    try:
        ckpt = load_checkpoint(path)
    except DasslLiteError:
        return True
    return ckpt.get("optimizer") is not None or ckpt.get("rng_state") is not None


def run_folder_evidence(folder: str) -> str:
    """Why ``folder`` is a training or evaluation run's folder ("" when it is not): it holds a
    ``config.yaml``, or a model folder with a training checkpoint (named). Tools that write
    into a folder of their own refuse such a folder: their files would replace the run's."""
    config = os.path.join(folder, "config.yaml")
    if os.path.isfile(config):
        return f"it holds {config}"
    if not os.path.isdir(folder):
        return ""
    for name in sorted(os.listdir(folder)):
        model_dir = os.path.join(folder, name)
        pointer = os.path.join(model_dir, POINTER_FILE)
        files = epoch_files(model_dir)
        if os.path.isfile(pointer):
            with open(pointer) as f:
                target = os.path.join(model_dir, f.readline().strip())
            if os.path.isfile(target) and _is_training_checkpoint(target):
                return f"it holds the training checkpoint {target}"
        elif files:
            return f"it holds {files[max(files)]}, a checkpoint without its pointer"
    return ""
