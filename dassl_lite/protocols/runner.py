"""Running protocol jobs one after the other: skip finished runs, resume unfinished ones, report
failures, print progress with elapsed and remaining time.

Two launchers run ``tools/train.py``:

* :class:`SubprocessLauncher` (default): one child process per job, as upstream scripts do. Memory
  (GPU included), logging handlers, RNG and imported state are fresh for every run, and a crash
  or out-of-memory kill fails one job, not the sweep.
* :class:`InProcessLauncher`: calls :func:`dassl_lite.cli.main` in this process; saves the
  interpreter start (seconds per job) for small toy-world runs and tests.

Either way the job's console output (stdout and stderr, tracebacks included) is appended to
``<run dir>/job.log``, beside the engine's own ``log.txt``.
"""
from __future__ import annotations

import datetime
import logging
import os
import shlex
import subprocess
import sys
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import IO, Callable, Dict, List, Optional, Sequence

from ..cli import main as train_main
from ..utils.logger import restored_root_logger
from .jobs import JOB_LOG, Job, RunDirMismatch, command_argv, job_status

logger = logging.getLogger(__name__)
job_output = logging.getLogger(__name__ + ".output")  # echo of jobs' output (--verbose)

Launcher = Callable[[List[str], IO[str]], int]


class SubprocessLauncher:
    """Run ``python train_script ARGV`` (``nproc > 1``: under torchrun with that many processes)
    with ``env`` added to the environment, and stream its output into the job log."""

    def __init__(self, train_script: str, python: str = sys.executable, echo: bool = False,
                 env: Optional[Dict[str, str]] = None, nproc: int = 1):
        self.train_script = train_script
        self.python = python
        self.echo = echo
        self.env = dict(env or {})
        self.nproc = nproc

    def command(self, argv: List[str]) -> List[str]:
        if self.nproc > 1:
            return [self.python, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={self.nproc}", self.train_script, *argv]
        return [self.python, self.train_script, *argv]

    def __call__(self, argv: List[str], log: IO[str]) -> int:
        cmd = self.command(argv)
        shown = " ".join(f"{k}={v}" for k, v in self.env.items())
        log.write(f"$ {shown + ' ' if shown else ''}{shlex.join(cmd)}\n")
        log.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, env=env)
        try:
            for line in proc.stdout:
                log.write(line)
                if self.echo:
                    job_output.info(line.rstrip("\n"))
            return proc.wait()
        except BaseException:  # Ctrl-C: stop the child too
            proc.terminate()
            proc.wait()
            raise


class InProcessLauncher:
    """Run :func:`dassl_lite.cli.main` here, with stdout/stderr sent to the job log."""

    def __call__(self, argv: List[str], log: IO[str]) -> int:
        log.write(f"$ tools/train.py {shlex.join(argv)}  (in-process)\n")
        log.flush()
        with restored_root_logger():
            try:
                with redirect_stdout(log), redirect_stderr(log):
                    code = train_main(argv)
                if code == 130:  # Ctrl-C stopped the job at a safe point: stop the whole run too
                    raise KeyboardInterrupt
                return code
            except SystemExit as e:
                return e.code if isinstance(e.code, int) else 1
            except Exception:
                traceback.print_exc(file=log)
                return 1


@dataclass
class Outcome:
    """What happened to a job: ``skipped`` (finished before), ``ran``, ``failed``, ``not_run``
    (its training run failed) or ``planned`` (dry run)."""

    job: Job
    state: str
    detail: str = ""  # one line: why it was skipped, failed or not run
    returncode: Optional[int] = None
    seconds: float = 0.0
    log_tail: str = ""  # last lines of the job log of a failed run

    @property
    def ok(self) -> bool:
        return self.state in ("skipped", "ran")


def _hms(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


def _jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


def _tail(path: str, offset: int, lines: int) -> str:
    with open(path, errors="replace") as f:
        f.seek(offset)
        return "".join(f.readlines()[-lines:]).rstrip("\n")


class _Clock:
    """Elapsed time and a remaining-time estimate from the jobs run so far (per kind)."""

    def __init__(self, jobs: Sequence[Job]):
        self.start = time.time()
        self.to_run = {id(j) for j in jobs if _quiet_state(j) != "finished"}
        self.durations: Dict[bool, List[float]] = {False: [], True: []}

    def record(self, job: Job, seconds: float) -> None:
        self.durations[job.is_eval].append(seconds)
        self.to_run.discard(id(job))

    def remaining(self, pending: Sequence[Job]) -> str:
        runs = [j for j in pending if id(j) in self.to_run]
        done = self.durations[False] + self.durations[True]
        if not runs:
            return "0:00:00"
        if not done:
            return f"unknown ({_jobs(len(runs))} to run)"
        overall = sum(done) / len(done)
        avg = {k: (sum(v) / len(v) if v else overall) for k, v in self.durations.items()}
        return f"~{_hms(sum(avg[j.is_eval] for j in runs))} ({_jobs(len(runs))} to run)"

    def line(self, pending: Sequence[Job]) -> str:
        return f"elapsed {_hms(time.time() - self.start)} | remaining {self.remaining(pending)}"


def _quiet_state(job: Job) -> str:
    try:
        return job_status(job)[0]
    except RunDirMismatch:
        return "failed"


def launch(job: Job, launcher: Launcher, tail_lines: int = 20) -> Outcome:
    """Run ``job`` with ``launcher``, its output appended to ``<run dir>/job.log``; a zero exit
    without final results counts as a failure."""
    os.makedirs(job.output_dir, exist_ok=True)
    log_path = os.path.join(job.output_dir, JOB_LOG)
    start = time.time()
    with open(log_path, "a") as log:
        offset = log.tell()
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {job.name}\n")
        code = launcher(command_argv(job), log)
    seconds = time.time() - start
    if code == 0 and job_status(job)[0] == "finished":
        return Outcome(job, "ran", returncode=0, seconds=seconds)
    why = f"exit code {code}" if code else "exit code 0 but no final results.json"
    return Outcome(job, "failed", f"{why} (log: {log_path})", code, seconds,
                   _tail(log_path, offset, tail_lines))


def precheck(job: Job, dry_run: bool = False) -> Optional[Outcome]:
    """The outcome of a job that is not to be run (finished, waiting for a failed training run,
    another config in its directory, or a dry run); None for a job to launch."""
    try:
        state, detail = job_status(job)
    except RunDirMismatch as e:
        return Outcome(job, "failed", str(e))
    if state == "finished":
        return Outcome(job, "skipped", detail)
    if dry_run:
        plan = "after its training run" if state == "waiting" else f"{state} {detail}".strip()
        return Outcome(job, "planned", plan)
    if state == "waiting":
        return Outcome(job, "not_run", detail)
    logger.info(f"  {state} {detail}".rstrip() + f" -> {job.output_dir}")
    return None


def _run_one(job: Job, launcher: Launcher, dry_run: bool) -> Outcome:
    return precheck(job, dry_run) or launch(job, launcher)


def run_jobs(jobs: Sequence[Job], launcher: Launcher, dry_run: bool = False) -> List[Outcome]:
    """Run ``jobs`` in order (training before the evaluations that need it); one outcome each."""
    clock = _Clock(jobs)
    outcomes = []
    for i, job in enumerate(jobs, 1):
        logger.info(f"[{i}/{len(jobs)}] {job.name}")
        outcome = _run_one(job, launcher, dry_run)
        outcomes.append(outcome)
        if outcome.state in ("ran", "failed") and outcome.returncode is not None:
            clock.record(job, outcome.seconds)
        logger.info(_outcome_line(outcome) + (f" | {clock.line(jobs[i:])}" if not dry_run else ""))
    return outcomes


def _outcome_line(o: Outcome) -> str:
    if o.state == "skipped":
        return f"  finished ({o.detail}): skipped"
    if o.state == "ran":
        return f"  done in {_hms(o.seconds)}"
    if o.state == "planned":
        return f"  would run: {o.detail}"
    if o.state == "not_run":
        return f"  not run: {o.detail}"
    return f"  FAILED: {o.detail}"
