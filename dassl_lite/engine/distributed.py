"""One run on several processes: DistributedDataParallel started by ``torchrun``.

``torchrun --nproc_per_node N tools/train.py ...`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` joins that process group (NCCL on
GPU, one device per local rank; Gloo on CPU). Then

* the training loader draws from a :class:`~torch.utils.data.DistributedSampler` (its epoch set
  every epoch), so each process sees ``1/N`` of the images; DDP averages the gradients, so one
  step with ``DATALOADER.TRAIN_X.BATCH_SIZE`` B per process is one step on the ``N*B`` images;
* evaluation is sharded the same way (without shuffling) and the outputs are gathered once, by
  dataset index: the images ``DistributedSampler`` repeats to even out the shards are counted once;
* only rank 0 writes files (log.txt, TensorBoard, checkpoints, results.json, config.yaml).

Without ``WORLD_SIZE > 1`` in the environment nothing here changes a run. Launch variables that
do not describe a process group are errors (:func:`check_launch_env`): a non-integer value names
the variable; a non-zero ``RANK``/``LOCAL_RANK`` without ``WORLD_SIZE > 1`` (left over from an
earlier torchrun job) stops the run, since such a process would train without writing anything;
ranks that do not join within ``$DASSL_LITE_DIST_TIMEOUT`` seconds (default 30) are named.
"""
from __future__ import annotations

import atexit
import datetime
import inspect
import logging
import os
import socket
import time
from typing import Any, List, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from ..errors import DasslLiteError
# The rank helpers and the sampler sharding live in utils (data loading uses them too); they
# stay importable from here.
from ..utils.distributed import (TIMEOUT_ENV, barrier, check_launch_env, env_int, env_world_size,
                                 get_rank, get_world_size, is_distributed, is_main_process,
                                 join_timeout_s, main_process_first, sampler_seed, shard_sampler)
from ..utils.seed import set_random_seed

logger = logging.getLogger(__name__)

TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def init_distributed(use_cuda: bool) -> Optional[torch.device]:
    """Join the process group torchrun describes; returns this process's device, or None when
    ``WORLD_SIZE`` is not above 1 (a single-process run)."""
    world = check_launch_env()
    if world <= 1:
        return None
    missing = [k for k in TORCHRUN_ENV if k not in os.environ]
    if missing:
        raise DasslLiteError(
            f"WORLD_SIZE={world} but {', '.join(missing)} not set; start the run with "
            f"`torchrun --nproc_per_node N tools/train.py ...`")
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = use_cuda and torch.cuda.is_available()
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise DasslLiteError(
                f"LOCAL_RANK {local_rank} has no GPU: {torch.cuda.device_count()} visible; use "
                f"--nproc_per_node <= the number of GPUs (CUDA_VISIBLE_DEVICES)")
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if not dist.is_initialized():
        store = _rendezvous(world, int(os.environ["RANK"]))
        dist.init_process_group(backend="nccl" if cuda else "gloo", store=store,
                                rank=int(os.environ["RANK"]), world_size=world)
        atexit.register(destroy_distributed)
        logger.info(f"Process group: rank {dist.get_rank()} of {dist.get_world_size()} "
                    f"({dist.get_backend()}, device {device})")
    return device


def _rendezvous(world: int, rank: int) -> "dist.Store":
    """The store of the process group once all ``world`` ranks have checked in; ranks missing
    after :func:`join_timeout_s` seconds are an error that names them (instead of waiting for
    the collective timeout, 30 minutes, when the launch variables are stale)."""
    host, port = os.environ["MASTER_ADDR"], env_int("MASTER_PORT", 0)
    timeout = join_timeout_s()
    where = f"MASTER_ADDR={host} MASTER_PORT={port}"
    # under torchrun's agent store rank 0 is a client too; each restart gets fresh keys
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "") == "True"
    prefix = f"dassl_lite/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    master = rank == 0 and not agent
    deadline = time.monotonic() + timeout
    if not master and not _wait_for_port(host, port, deadline):
        raise DasslLiteError(
            f"Process group of WORLD_SIZE={world}, this process RANK={rank}: rank 0 (the master) "
            f"did not answer at {where} within {timeout:g} s (${TIMEOUT_ENV}). Are the launch "
            f"variables stale (set in the shell, not by torchrun)? Unset "
            f"{', '.join(TORCHRUN_ENV)} for a single-process run, or start rank 0")
    try:
        store = dist.TCPStore(host, port, world, is_master=master,
                              timeout=datetime.timedelta(seconds=timeout),
                              wait_for_workers=False, multi_tenant=True)
    except Exception as e:  # address in use, unknown host, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DasslLiteError(
            f"Process group of WORLD_SIZE={world}, this process RANK={rank}: cannot "
            f"{'open' if master else 'join'} its store at {where}: {first}") from None
    store.set(f"{prefix}/joined/{rank}", "1")
    missing = list(range(world))
    while missing:
        missing = [r for r in missing if not store.check([f"{prefix}/joined/{r}"])]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if missing:
        raise DasslLiteError(
            f"Process group of WORLD_SIZE={world} at {where}: rank(s) "
            f"{', '.join(map(str, missing))} did not join within {timeout:g} s "
            f"(${TIMEOUT_ENV}). Are the launch variables stale (set in the shell, not by "
            f"torchrun)? Unset {', '.join(TORCHRUN_ENV)} for a single-process run, or start "
            f"every rank")
    store.set_timeout(datetime.timedelta(minutes=30))  # collectives' own timeout from here on
    return dist.PrefixStore(f"{prefix}/pg", store)


def _wait_for_port(host: str, port: int, deadline: float) -> bool:
    """Whether ``host:port`` accepts a TCP connection before ``deadline`` (``time.monotonic``)."""
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)


def destroy_distributed() -> None:
    """Leave the process group (registered at exit by :func:`init_distributed`)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel (as is when it has nothing to train).

    Buffers are not broadcast at each forward (they are frozen and equal on every rank), so
    evaluation runs without collectives and ranks may run different numbers of test batches.
    """
    if not any(p.requires_grad for p in model.parameters()):
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters
               else "broadcast_buffers")  # torch >= 2.14 renamed it
    return ddp(model, device_ids=device_ids, **{no_sync: False})


def agree_on_seed(seed: int) -> None:
    """Under DDP with ``SEED < 0``: seed every process with one random seed drawn by rank 0, so
    that all of them sample the same few-shot split (and shard the same training set)."""
    if not is_distributed() or seed >= 0:
        return
    shared = [int(torch.randint(0, 2**31 - 1, ()).item()) if is_main_process() else None]
    dist.broadcast_object_list(shared, src=0)
    set_random_seed(shared[0])
    logger.info(f"SEED < 0: every process uses the random seed {shared[0]} drawn by rank 0")


def unwrap(model: Any) -> Any:
    """The module inside DataParallel / DistributedDataParallel (``model`` otherwise)."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return model.module
    return model


def set_sampler_epoch(loader: Any, epoch: int) -> None:
    """``loader.sampler.set_epoch(epoch)`` when the sampler has it (DistributedSampler)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


# ---------------------------------------------------------------------- evaluation
class ShardedEvaluation:
    """Feeds an evaluator with every test image exactly once.

    Alone it passes each batch straight to ``evaluator.process``. Under DDP it keeps this rank's
    outputs with their dataset indices; :meth:`finish` gathers all ranks' on every rank, drops
    the copies DistributedSampler padded in, checks that every index ``0 .. size-1`` is there,
    and processes them in index order.
    """

    def __init__(self, evaluator: Any, size: int) -> None:
        self.evaluator = evaluator
        self.size = size
        self.sharded = is_distributed()
        self.count = 0
        self._parts: List[tuple] = []

    def process(self, output: torch.Tensor, labels: torch.Tensor, batch: dict) -> None:
        if not self.sharded:
            self.evaluator.process(output, labels)
            self.count += labels.numel()
            return
        if "index" not in batch:
            raise DasslLiteError("Sharded evaluation needs each batch's dataset indices "
                                 "(batch['index'], as DatasetWrapper gives); got none")
        self._parts.append((batch["index"].cpu(), output.detach().cpu(), labels.cpu()))

    def count_unsharded(self, n: int) -> None:
        """Count ``n`` images that a task fed to its evaluator itself (no gathering across
        processes: such an evaluation needs one process)."""
        if self.sharded:
            raise DasslLiteError(
                "This task's evaluation is not sharded across processes yet; evaluate with one "
                "process (python tools/train.py --eval-only ..., not torchrun)")
        self.count += n

    def finish(self) -> int:
        """Gather (under DDP) and process; returns the number of images evaluated."""
        if not self.sharded:
            return self.count
        mine = tuple(torch.cat(x) for x in zip(*self._parts)) if self._parts else None
        everyone: List[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine)
        parts = [p for p in everyone if p is not None]
        index = torch.cat([p[0] for p in parts])
        output, labels = torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
        keep = _first_of_each_index(index)
        if not torch.equal(index[keep], torch.arange(self.size)):
            raise DasslLiteError(f"Gathered evaluation covers {keep.numel()} distinct images; "
                                 f"expected every index 0..{self.size - 1}")
        self.evaluator.process(output[keep], labels[keep])
        self.count = keep.numel()
        return self.count


def _first_of_each_index(index: torch.Tensor) -> torch.Tensor:
    """Positions of the first occurrence of each distinct value of ``index``, by value."""
    order = torch.sort(index, stable=True).indices
    sorted_index = index[order]
    first = torch.ones_like(sorted_index, dtype=torch.bool)
    first[1:] = sorted_index[1:] != sorted_index[:-1]
    return order[first]
