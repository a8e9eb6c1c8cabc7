"""Checks before a run continues from a directory (``--resume DIR``, or its own ``OUTPUT_DIR``).

``--resume DIR`` must name a directory holding checkpoints (``<model>/checkpoint`` pointers):
a missing or empty directory is an error that says what was found, never a silent fresh start.
Either way, checkpoints written under another config (``DIR/config.yaml``: another trainer,
dataset, shots, backbone, schedule, ...) are an error naming the differing keys. A run that
already reached ``OPTIM.MAX_EPOCH`` is reported as finished and only evaluated.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional

from ..config.differences import config_differences
from ..errors import DasslLiteError
from .checkpoint import (EPOCH_FILE, POINTER_FILE, CheckpointError, epoch_files,
                         remove_stale_temp_files, resume_checkpoint)

logger = logging.getLogger(__name__)

# Keys that may differ between a run and its continuation (paths, logging, evaluation, workers).
RESUME_IGNORED = ("OUTPUT_DIR", "RESUME", "DATASET.ROOT", "MODEL.BACKBONE.CACHE_DIR",
                  "DATALOADER.NUM_WORKERS", "TRAIN.PRINT_FREQ", "TRAIN.CHECKPOINT_FREQ",
                  "USE_CUDA", "VERBOSE")
_IGNORED_PREFIXES = ("TEST.", "DATALOADER.TEST.")
# Keys that may change on purpose when a run is continued, with a warning: the per-process batch
# (resuming a DDP run on another number of processes keeps world x batch) and the epoch count
# (training a finished run for more epochs, as Dassl allows).
RESUME_WARNED = ("DATALOADER.TRAIN_X.BATCH_SIZE", "OPTIM.MAX_EPOCH")


class ResumeError(DasslLiteError):
    """A resume directory that is missing, empty or holds another run."""


def checkpoint_pointers(directory: str) -> Dict[str, str]:
    """``{model name: checkpoint file a resume continues from}`` for each ``directory/<model>``
    holding a ``checkpoint`` pointer or ``model.pth.tar-<N>`` files: the pointer's file, or a
    newer epoch file that loads (:func:`~.checkpoint.resume_checkpoint`)."""
    found = {}
    for name in sorted(os.listdir(directory)):
        model_dir = os.path.join(directory, name)
        pointer = os.path.join(model_dir, POINTER_FILE)
        if not (os.path.isfile(pointer) or epoch_files(model_dir)):
            continue
        try:
            path = resume_checkpoint(model_dir)
        except CheckpointError:
            if not os.path.isfile(pointer):
                raise
            with open(pointer) as f:  # names a missing file: the trainer reports it on resume
                path = f.readline().strip()
        if path:
            found[name] = os.path.basename(path)
    return found


def _describe(directory: str) -> str:
    entries = sorted(os.listdir(directory))
    if not entries:
        return "it is empty"
    shown = ", ".join(entries[:8]) + (f" and {len(entries) - 8} more" if len(entries) > 8 else "")
    return f"it holds {shown}"


def _check_exists(directory: str) -> None:
    if not os.path.exists(directory):
        raise ResumeError(f"--resume {directory}: no such directory; give the --output-dir of "
                          f"the run to continue")
    if not os.path.isdir(directory):
        raise ResumeError(f"--resume {directory}: is a file, not a run directory")


def _check_same_config(cfg, directory: str) -> None:
    diffs = [(k, a, b) for k, a, b in config_differences(cfg, directory)
             if k not in RESUME_IGNORED and not k.startswith(_IGNORED_PREFIXES)]
    for k, a, b in [d for d in diffs if d[0] in RESUME_WARNED]:
        logger.warning(f"Resuming {directory} with {k} {b!r} (the run used {a!r})")
    diffs = [d for d in diffs if d[0] not in RESUME_WARNED]
    if not diffs:
        return
    listed = "; ".join(f"{k}: {a!r} in the run, {b!r} now" for k, a, b in diffs[:6])
    more = f" (and {len(diffs) - 6} more)" if len(diffs) > 6 else ""
    raise ResumeError(
        f"Cannot resume from {directory}: its checkpoints were written with another config "
        f"({listed}{more}). Use the run's settings to continue it, or a new --output-dir to "
        f"start afresh."
    )


def check_resume(cfg, explicit: bool) -> Optional[int]:
    """Validate the directory a training run will continue from; returns the epoch it holds
    (None: nothing to resume). ``explicit``: the directory was given by ``--resume``."""
    directory = cfg.RESUME or cfg.OUTPUT_DIR
    if explicit:
        _check_exists(directory)
    elif not os.path.isdir(directory):
        return None
    pointers = checkpoint_pointers(directory)
    if not pointers:
        if explicit:
            raise ResumeError(
                f"--resume {directory}: no checkpoint to resume from (expected "
                f"<model>/checkpoint naming model.pth.tar-<epoch>); {_describe(directory)}"
            )
        return None
    for name in pointers:
        remove_stale_temp_files(os.path.join(directory, name))
    _check_same_config(cfg, directory)
    epochs = [int(m.group(1)) for m in map(EPOCH_FILE.match, pointers.values()) if m]
    epoch = min(epochs) if epochs else None
    if epoch is not None and epoch >= cfg.OPTIM.MAX_EPOCH:
        logger.info(f"The run in {directory} already finished (epoch {epoch} of "
                    f"{cfg.OPTIM.MAX_EPOCH}): nothing left to train; evaluating its final model")
    return epoch


def check_resume_models(cfg, model_names) -> None:
    """After the trainer is built: ``--resume DIR`` must hold checkpoints of its models
    (folders named after them), not only of another trainer's."""
    if not cfg.RESUME or not model_names:
        return
    pointers = checkpoint_pointers(cfg.RESUME)
    if not any(name in pointers for name in model_names):
        raise ResumeError(
            f"--resume {cfg.RESUME}: it holds checkpoints of {', '.join(sorted(pointers))}, but "
            f"{cfg.TRAINER.NAME} saves {', '.join(model_names)}: written by another trainer?"
        )
