"""Running protocol jobs on Slurm through submitit (``--launcher slurm``).

Jobs go out in waves: first every job that can run now (training runs, and evaluations whose
training run finished earlier), as one Slurm job array; then the evaluations whose training run
has just finished. Each Slurm job runs one ``tools/train.py`` run (in the job's own Python
process, or under torchrun with ``--gpus-per-job`` > 1 processes) with its output in the run's
``job.log``. The summary is written when every wave has ended. Finished runs are skipped before
anything is submitted, as with the other launchers; a job that fails (or that Slurm kills) is
reported with its logs while the others go on.

``--submitit-cluster local`` runs the same path through submitit's local executor (no Slurm).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from typing import Dict, List, Sequence

from ..errors import DasslLiteError
from .jobs import JOB_LOG, Job
from .runner import InProcessLauncher, Outcome, SubprocessLauncher, _outcome_line, launch, precheck

logger = logging.getLogger(__name__)


@dataclass
class SlurmOptions:
    """What each Slurm job asks for, and where submitit keeps its files."""

    folder: str  # submitit's pickles and stdout/stderr logs (%j: the Slurm job id)
    repo_root: str  # the checkout holding tools/train.py (put on the jobs' PYTHONPATH)
    partition: str = ""  # Slurm partition; "" = the cluster's default
    time_min: int = 240  # time limit of each job, minutes
    gpus_per_job: int = 1  # GPUs per job; > 1 runs the job with torchrun (DDP)
    array_size: int = 0  # at most this many jobs of an array running at once; 0 = no limit
    cluster: str = "slurm"  # "local": submitit's local executor

    @property
    def train_script(self) -> str:
        return os.path.join(self.repo_root, "tools", "train.py")


def check_slurm_available(cluster: str = "slurm") -> None:
    """``--launcher slurm`` needs submitit, and (unless ``cluster`` is ``local``) Slurm's
    ``sbatch`` on PATH; says which is missing in one line, before any job."""
    if importlib.util.find_spec("submitit") is None:
        raise DasslLiteError("--launcher slurm needs the submitit package, which is not "
                             "installed (pip install submitit)")
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise DasslLiteError("--launcher slurm: no Slurm on this machine (sbatch is not on "
                             "PATH); run from a Slurm login node, or use --devices or the "
                             "default subprocess launcher (--submitit-cluster local tests the "
                             "Slurm path without Slurm)")


def make_executor(opts: SlurmOptions):
    """A submitit executor for ``opts``."""
    import submitit

    executor = submitit.AutoExecutor(folder=opts.folder, cluster=opts.cluster)
    setup = [f"export PYTHONPATH={shlex.quote(os.path.abspath(opts.repo_root))}"
             "${PYTHONPATH:+:$PYTHONPATH}"]
    params = dict(name="dassl_lite", timeout_min=opts.time_min, gpus_per_node=opts.gpus_per_job,
                  tasks_per_node=1, slurm_setup=setup, local_setup=setup)
    if opts.partition:
        params["slurm_partition"] = opts.partition
    if opts.array_size:
        params["slurm_array_parallelism"] = opts.array_size
    executor.update_parameters(**params)
    return executor


def run_job_remotely(job: Job, repo_root: str, gpus: int) -> Outcome:
    """What a Slurm job runs: ``job`` in this fresh process (under torchrun for several GPUs)."""
    train_script = os.path.join(repo_root, "tools", "train.py")
    if gpus > 1:
        return launch(job, SubprocessLauncher(train_script, nproc=gpus))
    if repo_root not in sys.path:
        sys.path.insert(0, repo_root)
    import datasets  # noqa: F401  (registers the datasets, as tools/train.py does)
    import trainers  # noqa: F401

    return launch(job, InProcessLauncher())


def _lost(job: Job, submitted, error: BaseException) -> Outcome:
    """The outcome of a Slurm job that ended without returning (killed, timed out, crashed)."""
    first = str(error).strip().splitlines()[:1]
    detail = (f"Slurm job {submitted.job_id} ended without a result: "
              f"{first[0] if first else type(error).__name__} (log: "
              f"{os.path.join(job.output_dir, JOB_LOG)}; submitit log: {submitted.paths.stderr})")
    return Outcome(job, "failed", detail)


def _submit_wave(executor, wave: Sequence[Job], opts: SlurmOptions) -> Dict[int, Outcome]:
    """Submit ``wave`` as one job array and wait for every job; outcomes by job id."""
    import submitit

    repo = os.path.abspath(opts.repo_root)
    with executor.batch():
        submitted = [executor.submit(run_job_remotely, job, repo, opts.gpus_per_job)
                     for job in wave]
    by_sub = {id(s): job for s, job in zip(submitted, wave)}
    logger.info(f"Submitted {len(wave)} job(s): {', '.join(s.job_id for s in submitted)} "
                f"(submitit folder {opts.folder})")
    outcomes = {}
    poll_s = 1 if opts.cluster == "local" else 15  # Slurm: spare the scheduler
    for s in submitit.helpers.as_completed(submitted, poll_frequency=poll_s):
        job = by_sub[id(s)]
        try:
            outcome = dataclasses.replace(s.result(), job=job)
        except Exception as e:  # the Slurm job itself failed
            outcome = _lost(job, s, e)
        logger.info(f"{job.name}:" + _outcome_line(outcome))
        outcomes[id(job)] = outcome
    return outcomes


def run_jobs_with_submitit(jobs: Sequence[Job], opts: SlurmOptions) -> List[Outcome]:
    """Run ``jobs`` as Slurm jobs in dependency waves; outcomes in the order of ``jobs``."""
    executor = make_executor(opts)
    planned = {id(j) for j in jobs}
    outcomes: Dict[int, Outcome] = {}
    remaining = list(jobs)
    while remaining:
        ready = [j for j in remaining if j.train_job is None
                 or id(j.train_job) not in planned or id(j.train_job) in outcomes]
        taken = {id(j) for j in ready}
        remaining = [j for j in remaining if id(j) not in taken]
        wave = []
        for job in ready:
            outcome = precheck(job)
            if outcome is None:
                wave.append(job)
            else:
                logger.info(f"{job.name}:" + _outcome_line(outcome))
                outcomes[id(job)] = outcome
        if wave:
            outcomes.update(_submit_wave(executor, wave, opts))
    return [outcomes[id(j)] for j in jobs]
