"""Process-group helpers shared by data loading and training: rank, world size, barriers and
the DistributedSampler that shards a split across the processes of a ``torchrun`` job.

They live below ``data/`` and ``engine/`` (both use them); joining the process group and
wrapping models in DDP stay in :mod:`dassl_lite.engine.distributed`. Without an initialised
process group every helper here describes a single process and changes nothing.
:func:`check_launch_env` refuses launch variables that describe no process group (a stale
``RANK=1`` without ``WORLD_SIZE``, ``WORLD_SIZE=two``), naming them.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, RandomSampler, Sampler, SequentialSampler

from ..errors import DasslLiteError

logger = logging.getLogger(__name__)

TIMEOUT_ENV = "DASSL_LITE_DIST_TIMEOUT"  # seconds every rank has to join the process group
DEFAULT_JOIN_TIMEOUT_S = 30.0
_MEANING = {"WORLD_SIZE": "the number of processes", "RANK": "this process's rank",
            "LOCAL_RANK": "this process's rank on its machine", "MASTER_PORT": "a TCP port"}


def env_int(name: str, default: int) -> int:
    """The integer in environment variable ``name`` (``default`` when unset or empty); any other
    value is an error naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < (1 if name == "WORLD_SIZE" else 0):
        least = 1 if name == "WORLD_SIZE" else 0
        raise DasslLiteError(
            f"{name}={raw!r}: expected {_MEANING.get(name, 'an integer')}, an integer >= {least} "
            f"(as torchrun sets it); unset {name} for a single-process run")
    return value


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when unset)."""
    return env_int("WORLD_SIZE", 1)


def check_launch_env() -> int:
    """Validate the launch variables before anything runs; returns the world size.

    Outside a process group (``WORLD_SIZE`` unset or 1) a non-zero ``RANK`` or ``LOCAL_RANK`` is
    stale (left from an earlier torchrun job or a copied shell): such a process would take itself
    for a non-writing rank and train without writing results, so it is an error naming the
    variables."""
    world = env_world_size()
    ranks = {k: env_int(k, 0) for k in ("RANK", "LOCAL_RANK")}
    env_int("MASTER_PORT", 0)
    if world <= 1:
        stale = {k: v for k, v in ranks.items() if v}
        if stale:
            ws = os.environ.get("WORLD_SIZE")
            raise DasslLiteError(
                f"Stale launch variables: {' '.join(f'{k}={v}' for k, v in stale.items())} "
                f"but {'WORLD_SIZE is not set' if ws is None else f'WORLD_SIZE={ws}'}: this "
                f"single process would take itself for rank {max(stale.values())} of a process "
                f"group and write no results. Unset {', '.join(stale)} (left over from an "
                f"earlier torchrun job?), or start the run with torchrun")
    elif ranks["RANK"] >= world:
        raise DasslLiteError(f"RANK={ranks['RANK']} is not below WORLD_SIZE={world}: expected "
                             f"ranks 0..{world - 1} (stale launch variables?)")
    else:
        join_timeout_s()
    return world


def join_timeout_s() -> float:
    """Seconds every rank has to join the process group (``$DASSL_LITE_DIST_TIMEOUT``)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_JOIN_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DasslLiteError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds > 0")
    return value


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (from the process group, else from ``RANK`` when ``WORLD_SIZE > 1``;
    0 when alone)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return env_int("RANK", 0) if env_world_size() > 1 else 0


def get_world_size() -> int:
    """Processes in the process group (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0: the process that writes files."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every process (a no-op when not distributed)."""
    if is_distributed():
        if dist.get_backend() == "nccl":  # name this process's GPU (NCCL warns otherwise)
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. generating or downloading a dataset), then the others."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


def sampler_seed(cfg_seed: int) -> int:
    """The DistributedSampler seed: ``SEED``, or the seed the processes agreed on."""
    return cfg_seed if cfg_seed >= 0 else torch.initial_seed() % 2**31


def shard_sampler(sampler: Sampler, data_source: Sequence, batch_size: int, is_train: bool,
                  seed: int, split_name: str) -> Sampler:
    """Under DDP, the :class:`DistributedSampler` replacing ``sampler`` (``sampler`` otherwise).

    A ``RandomSampler`` becomes a shuffling DistributedSampler seeded with ``seed`` (+ the epoch),
    a ``SequentialSampler`` a non-shuffling one. Shards are padded to equal length by repeating
    images (every rank must run the same number of training steps). A training split smaller
    than ``world x batch_size`` is not emptied: each rank runs one smaller batch per epoch.
    """
    if not is_distributed():
        return sampler
    world = dist.get_world_size()
    if not isinstance(sampler, (RandomSampler, SequentialSampler)):
        raise DasslLiteError(
            f"{split_name}: distributed runs support the samplers RandomSampler and "
            f"SequentialSampler; got {type(sampler).__name__} (run it on one process)")
    shard = DistributedSampler(data_source, num_replicas=world, rank=dist.get_rank(),
                               shuffle=isinstance(sampler, RandomSampler), seed=seed,
                               drop_last=False)
    if is_train:
        _explain_train_shards(len(data_source), len(shard), world, batch_size, split_name)
    return shard


def _explain_train_shards(n: int, per_rank: int, world: int, batch_size: int,
                          split_name: str) -> None:
    repeated = per_rank * world - n
    logger.info(f"{split_name}: {n} images over {world} processes, {per_rank} each; effective "
                f"batch {world} x {batch_size} = {world * batch_size}")
    if repeated:
        logger.warning(f"{split_name}: {repeated} image(s) repeated every epoch to give the "
                       f"{world} processes equal shards ({n} is not a multiple of {world})")
    if per_rank < batch_size:
        logger.warning(f"{split_name}: {per_rank} images per process is less than the batch "
                       f"size {batch_size}: each process runs one batch of {per_rank} per epoch "
                       f"(nothing dropped)")
