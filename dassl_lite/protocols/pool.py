"""Running protocol jobs in parallel on the GPUs of one machine (``--devices 0,1,2,3``).

Each device slot (one device, or ``--gpus-per-job`` devices run with torchrun) runs one job at a
time in a child process that sees only its devices (``CUDA_VISIBLE_DEVICES``). An evaluation job
starts once its training job has ended; a job that fails is reported with its log and the others
go on. Finished jobs are skipped and unfinished ones resumed, as with the sequential runner.
"""
from __future__ import annotations

import logging
import os
import threading
import traceback
from typing import Callable, Dict, List, Optional, Sequence

from ..errors import DasslLiteError
from .jobs import Job
from .runner import Launcher, Outcome, _outcome_line, _run_one

logger = logging.getLogger(__name__)


def device_slots(devices: str, gpus_per_job: int = 1) -> List[str]:
    """``"0,1,2,3"`` -> ``["0", "1", "2", "3"]`` (with 2 GPUs per job: ``["0,1", "2,3"]``)."""
    ids = [d.strip() for d in devices.split(",") if d.strip()]
    if not ids or len(set(ids)) != len(ids):
        raise DasslLiteError(f"--devices takes distinct device ids separated by commas "
                             f"(e.g. 0,1,2,3); got {devices!r}")
    if gpus_per_job < 1 or len(ids) % gpus_per_job:
        raise DasslLiteError(f"--gpus-per-job {gpus_per_job} must divide the {len(ids)} devices "
                             f"of --devices {devices}")
    return [",".join(ids[i:i + gpus_per_job]) for i in range(0, len(ids), gpus_per_job)]


def check_devices_present(devices: str, count: Optional[int] = None) -> None:
    """Every id of ``--devices`` names a GPU of this machine (ids ``0 .. count-1``, ``count``
    from ``torch.cuda.device_count()``; ``GPU-``/``MIG-`` UUIDs pass when there is a GPU): a
    missing one would make its jobs run on the CPU without a word."""
    if count is None:
        import torch

        count = torch.cuda.device_count()
    ids = [d.strip() for d in devices.split(",") if d.strip()]
    missing = [d for d in ids if not (d.isdigit() and int(d) < count
                                      or count and d.startswith(("GPU-", "MIG-")))]
    if not missing:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    available = (f"GPU {', '.join(map(str, range(count)))}" if count
                 else "no GPU (torch sees no CUDA device)")
    raise DasslLiteError(
        f"--devices {devices}: no GPU {', '.join(missing)} on this machine; available: "
        f"{available}{f' (CUDA_VISIBLE_DEVICES={visible})' if visible is not None else ''}. "
        f"Without them the jobs would run on the CPU; drop --devices to run the jobs one after "
        f"the other")


class _Queue:
    """Jobs in plan order; an evaluation job is ready when its training job has an outcome."""

    def __init__(self, jobs: Sequence[Job]):
        self.pending = list(jobs)
        self.planned = {id(j) for j in jobs}
        self.done: Dict[int, Outcome] = {}
        self.cond = threading.Condition()

    def _ready(self, job: Job) -> bool:
        train = job.train_job
        return train is None or id(train) not in self.planned or id(train) in self.done

    def take(self) -> Optional[Job]:
        """The next ready job (waits while only unready jobs remain); None when all are taken."""
        with self.cond:
            while self.pending:
                job = next((j for j in self.pending if self._ready(j)), None)
                if job is not None:
                    self.pending.remove(job)
                    return job
                self.cond.wait()
            return None

    def finish(self, job: Job, outcome: Outcome) -> None:
        with self.cond:
            self.done[id(job)] = outcome
            self.cond.notify_all()


def _safe_run(job: Job, launcher: Launcher) -> Outcome:
    try:
        return _run_one(job, launcher, dry_run=False)
    except Exception as e:  # a bug in one job's handling must not stop the other slots
        logger.error(traceback.format_exc())
        return Outcome(job, "failed", f"{type(e).__name__}: {e}")


def run_jobs_on_devices(jobs: Sequence[Job], launcher_for: Callable[[str], Launcher],
                        slots: Sequence[str]) -> List[Outcome]:
    """Run ``jobs`` with one job per slot at a time (``launcher_for(slot)`` runs a job on the
    slot's devices); outcomes in the order of ``jobs``."""
    queue = _Queue(jobs)
    order = {id(j): i for i, j in enumerate(jobs, 1)}

    def work(slot: str) -> None:
        launcher = launcher_for(slot)
        while (job := queue.take()) is not None:
            logger.info(f"[{order[id(job)]}/{len(jobs)}] {job.name} on device {slot}")
            outcome = _safe_run(job, launcher)
            logger.info(f"[{order[id(job)]}/{len(jobs)}] {job.name}:" + _outcome_line(outcome))
            queue.finish(job, outcome)

    threads = [threading.Thread(target=work, args=(slot,), name=f"device-{slot}", daemon=True)
               for slot in slots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [queue.done[id(j)] for j in jobs]
