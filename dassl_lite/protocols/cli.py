"""Command line shared by ``tools/base2new.py``, ``tools/fewshot.py`` and ``tools/crossdataset.py``.

Exit status: 0 when every job finished, 1 when some failed or could not run (the summary marks
their values missing), 2 for bad arguments or configs (reported before any job runs).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

from ..cli import add_list_configs_flag, import_user_module, list_configs_requested
from ..errors import DasslLiteError
from ..registry import TRAINER_REGISTRY
from . import report
from .plans import (RunSpec, check_seeds_and_shots, plan_base2new, plan_crossdataset,
                    plan_fewshot)
from .pool import check_devices_present, device_slots, run_jobs_on_devices
from .resolve import BENCHMARKS, benchmark_datasets, resolve_dataset, resolve_datasets
from .resolve import resolve_trainer_config
from .runner import InProcessLauncher, Outcome, SubprocessLauncher, run_jobs
from .slurm import SlurmOptions, check_slurm_available, run_jobs_with_submitit
from .summary import (METRICS, failed_outcomes, failure_lines, summarize_base2new,
                      summarize_crossdataset, summarize_fewshot)

PROTOCOL_LOGGER = "dassl_lite.protocols"
_OPT_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


class Protocol:
    """One protocol: its flags, datasets, jobs, summary, summary path and tables."""

    description = ""

    def __init__(self, args: argparse.Namespace, dataset_dir: str):
        self.args = args

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Add the protocol's own flags."""

    def plan(self, spec: RunSpec) -> list:
        raise NotImplementedError

    def summarize(self, spec: RunSpec, outcomes: Sequence[Outcome]) -> Dict:
        raise NotImplementedError

    def stem(self, spec: RunSpec) -> str:
        """The summary files' path without extension."""
        raise NotImplementedError

    def tables(self, summaries: Sequence[Dict], fmt: str) -> List[str]:
        raise NotImplementedError

    def title(self, summary: Dict) -> str:
        return (f"{summary['trainer']} ({summary['config']}), seeds "
                f"{' '.join(map(str, summary['seeds']))}: {summary['metric']}, mean ± "
                f"population std over seeds")


def _datasets_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", nargs="+", default=["all"], metavar="DATASET",
                   help="config stems (oxford_pets), DATASET.NAMEs (OxfordPets) or YAML paths; "
                        "'all' (default): every dataset of --benchmark")


class Base2New(Protocol):
    description = ("Base-to-novel generalization: train on the base classes (its final test is "
                   "the base accuracy), evaluate the same weights on the new classes; HM.")

    def __init__(self, args, dataset_dir):
        super().__init__(args, dataset_dir)
        self.datasets = resolve_datasets(args.datasets, args.benchmark, dataset_dir)

    @staticmethod
    def add_arguments(p):
        _datasets_arg(p)
        p.add_argument("--shots", type=int, default=16, help="images per base class (default 16)")

    def plan(self, spec):
        return plan_base2new(spec, self.datasets, self.args.seeds, self.args.shots)

    def summarize(self, spec, outcomes):
        return summarize_base2new(spec, self.datasets, self.args.seeds, self.args.shots,
                                  outcomes, self.args.metric)

    def stem(self, spec):
        return os.path.join(spec.output_root, "base2new",
                            f"summary_{spec.trainer}_{spec.cfg_label}_shots{self.args.shots}")

    def tables(self, summaries, fmt):
        out = [f"Base-to-novel, {self.args.shots} shots, {self.title(s)}\n"
               + report.base2new_table(s, fmt) for s in summaries]
        if len(summaries) > 1:
            out.append("Average over datasets\n" + report.comparison_table(summaries, fmt))
        return out


class FewShot(Protocol):
    description = "Few-shot learning on all classes, for several shot counts."

    def __init__(self, args, dataset_dir):
        super().__init__(args, dataset_dir)
        self.datasets = resolve_datasets(args.datasets, args.benchmark, dataset_dir)

    @staticmethod
    def add_arguments(p):
        _datasets_arg(p)
        p.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16],
                       help="shot counts (default 1 2 4 8 16)")

    def plan(self, spec):
        return plan_fewshot(spec, self.datasets, self.args.seeds, self.args.shots)

    def summarize(self, spec, outcomes):
        return summarize_fewshot(spec, self.datasets, self.args.seeds, self.args.shots,
                                 outcomes, self.args.metric)

    def stem(self, spec):
        return os.path.join(spec.output_root, f"fewshot_summary_{spec.trainer}_{spec.cfg_label}")

    def tables(self, summaries, fmt):
        return [f"Few-shot, {self.title(s)}\n" + report.fewshot_table(s, fmt) for s in summaries]


class CrossDataset(Protocol):
    description = ("Cross-dataset transfer / domain generalization: train on a source dataset "
                   "(all classes), evaluate the same weights on target datasets. DG: "
                   "--benchmark papers_dg (ImageNet -> V2, Sketch, A, R) or toy_dg.")

    def __init__(self, args, dataset_dir):
        super().__init__(args, dataset_dir)
        default_source = benchmark_datasets(args.benchmark)[0]
        self.source = resolve_dataset(args.source or default_source, dataset_dir)
        self.targets = [t for t in resolve_datasets(args.targets, args.benchmark, dataset_dir)
                        if t != self.source]
        if not self.targets:
            raise DasslLiteError(f"No target dataset besides the source {self.source.label!r}; "
                                 f"give --targets")

    @staticmethod
    def add_arguments(p):
        p.add_argument("--source", default=None,
                       help="training dataset (default: the first of --benchmark)")
        p.add_argument("--targets", nargs="+", default=["all"], metavar="DATASET",
                       help="evaluation datasets; 'all' (default): the rest of --benchmark")
        p.add_argument("--shots", type=int, default=16, help="source training shots (default 16)")

    def plan(self, spec):
        return plan_crossdataset(spec, self.source, self.targets, self.args.seeds, self.args.shots)

    def summarize(self, spec, outcomes):
        return summarize_crossdataset(spec, self.source, self.targets, self.args.seeds,
                                      self.args.shots, outcomes, self.args.metric)

    def stem(self, spec):
        return os.path.join(spec.output_root, "evaluation",
                            f"summary_{spec.trainer}_{spec.cfg_label}_{self.args.shots}shots_"
                            f"from_{self.source.label}")

    def tables(self, summaries, fmt):
        head = (f"Cross-dataset from {self.source.label}, {self.args.shots} shots, seeds "
                f"{' '.join(map(str, self.args.seeds))}: {self.args.metric}, mean ± population "
                f"std over seeds")
        return [head + "\n" + report.crossdataset_table(summaries, fmt)]


PROTOCOLS: Dict[str, Type[Protocol]] = {
    "base2new": Base2New, "fewshot": FewShot, "crossdataset": CrossDataset,
}


def build_parser(protocol: str, repo_root: str) -> argparse.ArgumentParser:
    """Flags shared by every protocol plus the protocol's own."""
    cls = PROTOCOLS[protocol]
    p = argparse.ArgumentParser(
        description=cls.description,
        epilog="Trailing KEY VALUE config options (e.g. OPTIM.MAX_EPOCH 5) go to every run; "
               "they start at the first KEY.NAME token or after '--'.")
    p.add_argument("--trainer", nargs="+", required=True, metavar="TRAINER",
                   help="trainer name(s); several run one after the other")
    p.add_argument("--config-file", required=True,
                   help="trainer YAML path, or a name under configs/trainers/<TRAINER>/ (vit_b16)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="default 1 2 3")
    p.add_argument("--benchmark", default="toy", choices=list(BENCHMARKS),
                   help="dataset list that 'all' means (default toy)")
    p.add_argument("--metric", default="accuracy", choices=METRICS, help="default accuracy")
    add_run_arguments(p, repo_root)
    add_list_configs_flag(p)
    cls.add_arguments(p)
    return p


def add_run_arguments(p: argparse.ArgumentParser, repo_root: str) -> None:
    """The flags every protocol tool shares: dataset root, output root, imports, launchers
    (subprocess, in-process, device pool, Slurm), --compile, --dry-run, --verbose, table format
    and configs folder."""
    p.add_argument("--root", default=os.environ.get("DATA", ""),
                   help="dataset root (default: $DATA)")
    p.add_argument("--output-root", default="output", help="default ./output")
    p.add_argument("--import", dest="imports", action="append", default=[],
                   metavar="MODULE_OR_FILE", help="user module registering trainers/datasets")
    p.add_argument("--launcher", default="subprocess",
                   choices=["subprocess", "inprocess", "slurm"],
                   help="run each job in a child process (default), in this process, or as a "
                        "Slurm job through submitit")
    p.add_argument("--devices", default="",
                   help="GPU ids (e.g. 0,1,2,3): run jobs in parallel, one job per device at a "
                        "time (subprocess launcher)")
    p.add_argument("--gpus-per-job", type=int, default=1,
                   help="GPUs per job (default 1); > 1 runs each job with torchrun (DDP)")
    slurm = p.add_argument_group("Slurm (--launcher slurm)")
    slurm.add_argument("--partition", default="", help="Slurm partition (default: the cluster's)")
    slurm.add_argument("--time", type=int, default=240, help="time limit per job, minutes")
    slurm.add_argument("--array-size", type=int, default=0,
                       help="at most this many jobs running at once (default: no limit)")
    slurm.add_argument("--submitit-folder", default="",
                       help="submitit's logs and pickles (default <output-root>/submitit/%%j)")
    slurm.add_argument("--submitit-cluster", default="slurm", choices=["slurm", "local"],
                       help="'local': submitit's local executor, without Slurm (testing)")
    p.add_argument("--compile", action="store_true",
                   help="every job with MODEL.COMPILE True (torch.compile; docs/speed.md)")
    p.add_argument("--dry-run", action="store_true", help="list the jobs and their state only")
    p.add_argument("--verbose", action="store_true",
                   help="also echo the jobs' output (subprocess launcher)")
    p.add_argument("--table-format", default="github", help="tabulate format (default github)")
    p.add_argument("--configs-dir", default=os.path.join(repo_root, "configs"),
                   help="folder holding datasets/*.yaml and trainers/<TRAINER>/*.yaml")


def split_opts(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Split ``argv`` into flags and trailing ``KEY VALUE`` options (at ``--`` or the first
    token that looks like a config key), so ``--datasets a b OPTIM.LR 0.1`` parses."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    for i, token in enumerate(argv):
        if _OPT_KEY.match(token):
            return argv[:i], argv[i:]
    return argv, []


def _setup_console() -> None:
    """Progress lines to the current stdout (replacing a handler of an earlier call)."""
    log = logging.getLogger(PROTOCOL_LOGGER)
    for old in [h for h in log.handlers if getattr(h, "_protocol_console", False)]:
        log.removeHandler(old)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._protocol_console = True
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # in-process jobs reconfigure the root logger


def _specs(args, opts: List[str]) -> List[RunSpec]:
    if not args.root:
        raise DasslLiteError("No dataset root: pass --root DIR or set the DATA environment "
                             "variable")
    trainer_dir = os.path.join(args.configs_dir, "trainers")
    for trainer in args.trainer:  # an unknown name, not a missing config folder
        TRAINER_REGISTRY.get(trainer)
    return [RunSpec(t, resolve_trainer_config(args.config_file, t, trainer_dir), args.root,
                    args.output_root, list(args.imports), opts) for t in args.trainer]


def _plan(protocol: str, args, opts):
    for module in args.imports:
        import_user_module(module)
    check_seeds_and_shots(args.seeds, args.shots)
    proto = PROTOCOLS[protocol](args, os.path.join(args.configs_dir, "datasets"))
    specs = _specs(args, opts)
    return proto, [(spec, proto.plan(spec)) for spec in specs]


def _report(proto: Protocol, plans, outcomes: List[Outcome], fmt: str) -> None:
    summaries = []
    for spec, _ in plans:
        mine = [o for o in outcomes if o.job.trainer == spec.trainer]
        summary = proto.summarize(spec, mine)
        paths = report.write_summary(summary, proto.stem(spec))
        summaries.append(summary)
        print(f"Summary written to {' and '.join(paths)}")
    for table in proto.tables(summaries, fmt):
        print("\n" + table)
    failed = failed_outcomes(outcomes)
    if failed:
        print(f"\n{len(failed)} of {len(outcomes)} jobs did not complete; their values are "
              f"marked missing:")
        for line in failure_lines(failed):
            print(line)


def check_launch_flags(args) -> None:
    if args.gpus_per_job < 1:
        raise DasslLiteError(f"--gpus-per-job must be at least 1; got {args.gpus_per_job}")
    if args.devices and args.launcher != "subprocess":
        raise DasslLiteError(f"--devices runs jobs in child processes on those GPUs; it cannot be "
                             f"used with --launcher {args.launcher}")
    if args.gpus_per_job > 1 and not (args.devices or args.launcher == "slurm"):
        raise DasslLiteError("--gpus-per-job > 1 needs --devices or --launcher slurm")
    if args.launcher == "slurm" and not args.dry_run:
        check_slurm_available(args.submitit_cluster)


def run_with_launcher(jobs, args, repo_root: str) -> List[Outcome]:
    """Run ``jobs`` with the launcher the flags choose."""
    train_script = os.path.join(repo_root, "tools", "train.py")
    if args.dry_run or not (args.devices or args.launcher == "slurm"):
        launcher = (InProcessLauncher() if args.launcher == "inprocess"
                    else SubprocessLauncher(train_script, echo=args.verbose))
        return run_jobs(jobs, launcher, dry_run=args.dry_run)
    if args.launcher == "slurm":
        folder = args.submitit_folder or os.path.join(args.output_root, "submitit", "%j")
        return run_jobs_with_submitit(jobs, SlurmOptions(
            folder, repo_root, args.partition, args.time, args.gpus_per_job, args.array_size,
            args.submitit_cluster))
    def launcher_for(slot: str) -> SubprocessLauncher:
        return SubprocessLauncher(train_script, echo=args.verbose,
                                  env={"CUDA_VISIBLE_DEVICES": slot}, nproc=args.gpus_per_job)

    return run_jobs_on_devices(jobs, launcher_for, device_slots(args.devices, args.gpus_per_job))


INTERRUPTED = ("\nInterrupted. Run the same command again to resume: finished runs are skipped, "
               "unfinished ones continue from their last checkpoint.")
OPTS_EPILOG = ("Trailing KEY VALUE config options go to every run; they start at the first "
               "KEY.NAME token or after '--'.")


def prepare(argv: Optional[Sequence[str]], make_parser: Callable[[], argparse.ArgumentParser],
            plan: Callable[[argparse.Namespace, List[str]], Any]) -> Tuple[Optional[int], Any, Any]:
    """Parse ``argv`` (flags, then trailing KEY VALUE options), check the launch flags and
    ``plan(args, opts)``: ``(None, args, plan)``, or ``(exit code, None, None)`` when
    ``--list-configs`` answered or a bad argument was reported (2)."""
    flags, opts = split_opts(sys.argv[1:] if argv is None else argv)
    listed = list_configs_requested(flags)
    if listed is not None:
        return listed, None, None
    args = make_parser().parse_args(flags)
    _setup_console()
    try:
        check_launch_flags(args)
        opts = opts + ["MODEL.COMPILE", "True"] if args.compile else opts
        planned = plan(args, opts)
        if args.devices:
            device_slots(args.devices, args.gpus_per_job)  # bad ids fail before any job
            if not args.dry_run:
                check_devices_present(args.devices)
    except DasslLiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2, None, None
    return None, args, planned


def main(protocol: str, argv: Optional[Sequence[str]] = None, repo_root: str = ".") -> int:
    """Run ``protocol`` (base2new, fewshot, crossdataset) as its tool does."""
    code, args, planned = prepare(argv, lambda: build_parser(protocol, repo_root),
                                  lambda a, opts: _plan(protocol, a, opts))
    if code is not None:
        return code
    proto, plans = planned
    jobs = [job for _, plan_jobs in plans for job in plan_jobs]
    try:
        outcomes = run_with_launcher(jobs, args, repo_root)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    if args.dry_run:
        return 0
    _report(proto, plans, outcomes, args.table_format)
    return 1 if failed_outcomes(outcomes) else 0
