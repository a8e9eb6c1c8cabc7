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

Without ``WORLD_SIZE > 1`` in the environment nothing here changes a run.
"""
from __future__ import annotations

import atexit
import contextlib
import inspect
import logging
import os
from typing import Any, Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DistributedSampler, RandomSampler, Sampler, SequentialSampler

from ..errors import DasslLiteError

logger = logging.getLogger(__name__)

TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (from the process group, else from ``RANK``; 0 when alone)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


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


def init_distributed(use_cuda: bool) -> Optional[torch.device]:
    """Join the process group torchrun describes; returns this process's device, or None when
    ``WORLD_SIZE`` is not above 1 (a single-process run)."""
    world = env_world_size()
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
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        atexit.register(destroy_distributed)
        logger.info(f"Process group: rank {dist.get_rank()} of {dist.get_world_size()} "
                    f"({dist.get_backend()}, device {device})")
    return device


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
    from ..utils.seed import set_random_seed

    shared = [int(torch.randint(0, 2**31 - 1, ()).item()) if is_main_process() else None]
    dist.broadcast_object_list(shared, src=0)
    set_random_seed(shared[0])
    logger.info(f"SEED < 0: every process uses the random seed {shared[0]} drawn by rank 0")


def sampler_seed(cfg_seed: int) -> int:
    """The DistributedSampler seed: ``SEED``, or the seed the processes agreed on."""
    return cfg_seed if cfg_seed >= 0 else torch.initial_seed() % 2**31


def unwrap(model: Any) -> Any:
    """The module inside DataParallel / DistributedDataParallel (``model`` otherwise)."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return model.module
    return model


# ---------------------------------------------------------------------- samplers
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
