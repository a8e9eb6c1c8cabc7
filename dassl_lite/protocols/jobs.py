"""A protocol job (one ``tools/train.py`` run) and what its run directory says about it.

A training job is *finished* when ``results.json`` exists and the weights it evaluated are the
final ones: epoch ``OPTIM.MAX_EPOCH`` (with ``TEST.FINAL_MODEL best_val``: the run's latest
checkpoint is that epoch; a run without learned weights, e.g. zero-shot CLIP, has results with
``epoch: null`` and no checkpoint).
An unfinished training job with checkpoints is *resumed*: ``tools/train.py`` into the same
directory continues from the latest checkpoint. An evaluation job is finished when its
``results.json`` was made with the weights of the epoch its training run ended at; it loads that
epoch (read from the training run's ``results.json``, never a hard-coded number).

A directory holding a run of another configuration is never reused or resumed: the job fails
with the differing keys (use another ``--output-root`` or delete the directory).
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..config.differences import IGNORED_KEYS, config_differences  # noqa: F401 (were here)
from ..engine.checkpoint import POINTER_FILE
from ..errors import DasslLiteError
from ..evaluation.anomaly_threshold import threshold_setting

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
JOB_LOG = "job.log"
_EPOCH_FILE = re.compile(r"^model\.pth\.tar-(\d+)$")


class RunDirMismatch(DasslLiteError):
    """A run directory holds a run of another configuration."""


@dataclass
class Job:
    """One ``tools/train.py`` run: ``flags`` then trailing ``opts`` (KEY VALUE), its expected
    config ``cfg`` and, for an evaluation job, the training job whose weights it evaluates."""

    kind: str  # e.g. "train_base", "test_new", "train", "test"
    trainer: str
    dataset: str  # dataset config stem
    seed: int
    shots: int
    output_dir: str
    flags: List[str]
    opts: List[str]
    cfg: Any = None
    train_job: Optional["Job"] = None

    @property
    def name(self) -> str:
        shots = f" {self.shots}shots" if self.kind == "train" else ""
        return f"{self.kind} {self.dataset}{shots} seed{self.seed} ({self.trainer})"

    @property
    def argv(self) -> List[str]:
        return self.flags + self.opts

    @property
    def is_eval(self) -> bool:
        return self.train_job is not None


def read_results(run_dir: str) -> Optional[Dict[str, Any]]:
    """``run_dir/results.json``, or None when absent or unreadable (a warning says which)."""
    path = os.path.join(run_dir, RESULTS_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        logger.warning(f"Ignoring unreadable {path}: {e}")
        return None


def checkpoint_epoch(run_dir: str) -> Optional[int]:
    """The epoch named by the ``<model>/checkpoint`` pointers in ``run_dir`` (the smallest when
    several models disagree); None when there is none."""
    if not os.path.isdir(run_dir):
        return None
    epochs = []
    for name in sorted(os.listdir(run_dir)):
        pointer = os.path.join(run_dir, name, POINTER_FILE)
        if os.path.isfile(pointer):
            with open(pointer) as f:
                match = _EPOCH_FILE.match(f.readline().strip())
            if match:
                epochs.append(int(match.group(1)))
    return min(epochs) if epochs else None


def check_same_config(job: Job) -> None:
    """Raise :class:`RunDirMismatch` when ``job.output_dir`` holds results or checkpoints of a
    run with another configuration."""
    run_dir = job.output_dir
    has_state = read_results(run_dir) is not None or checkpoint_epoch(run_dir) is not None
    diffs = config_differences(job.cfg, run_dir) if has_state else []
    if diffs:
        listed = "; ".join(f"{k}: {a!r} in the run, {b!r} now" for k, a, b in diffs[:5])
        more = f" (and {len(diffs) - 5} more)" if len(diffs) > 5 else ""
        raise RunDirMismatch(
            f"{run_dir} holds a run with another config ({listed}{more}); delete the directory "
            f"or use another --output-root"
        )


def train_finished(job: Job, results: Optional[Dict[str, Any]]) -> bool:
    """Whether a training job's results are those of its final weights."""
    cfg = job.cfg
    if results is None:
        return False
    if results.get("epoch") is None and checkpoint_epoch(job.output_dir) is None:
        return True  # nothing learned (e.g. zero-shot CLIP): the test is the whole run
    if cfg.TEST.FINAL_MODEL == "best_val":
        return checkpoint_epoch(job.output_dir) == cfg.OPTIM.MAX_EPOCH
    return results.get("epoch") == cfg.OPTIM.MAX_EPOCH


def job_status(job: Job) -> Tuple[str, str]:
    """``(state, detail)`` with state ``finished``, ``resume``, ``new`` or ``waiting`` (an
    evaluation whose training run is not finished). Raises :class:`RunDirMismatch`."""
    check_same_config(job)
    results = read_results(job.output_dir)
    if job.is_eval:
        try:
            check_same_config(job.train_job)
        except RunDirMismatch:
            return "waiting", "its training run directory holds another config"
        train_results = read_results(job.train_job.output_dir)
        if not train_finished(job.train_job, train_results):
            return "waiting", "its training run is not finished"
        if (results is not None and results.get("epoch") == train_results.get("epoch")
                and _same_threshold(job, results)):
            return "finished", _epoch_text(results)
        return "new", ""
    if train_finished(job, results):
        return "finished", _epoch_text(results)
    epoch = checkpoint_epoch(job.output_dir)
    return ("resume", f"from epoch {epoch}") if epoch is not None else ("new", "")


def _same_threshold(job: Job, results: Dict[str, Any]) -> bool:
    """Whether an evaluation's results were written with the decision threshold asked now
    (``TEST.ANOMALY.THRESHOLD``; "" for runs without one, and for a job planned without a
    config, as the launcher tests' jobs are)."""
    asked = threshold_setting(job.cfg) if job.cfg is not None else ""
    return asked == str(results.get("threshold_setting", ""))


def _epoch_text(results: Dict[str, Any]) -> str:
    epoch = results.get("epoch")
    return f"epoch {epoch}" if epoch is not None else "no learned weights"


def command_argv(job: Job) -> List[str]:
    """``tools/train.py`` arguments of ``job``; an evaluation loads the epoch its training run
    ended at (as tested there: the best-val model when ``TEST.FINAL_MODEL best_val``)."""
    if not job.is_eval:
        return job.argv
    train = job.train_job
    epoch = (read_results(train.output_dir) or {}).get("epoch")
    if epoch is None or train.cfg.TEST.FINAL_MODEL == "best_val":
        return job.argv
    return job.flags + ["--load-epoch", str(epoch)] + job.opts
