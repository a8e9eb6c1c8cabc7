"""The jobs of each protocol and their output layout (upstream's script layout).

* base-to-novel: ``<out>/base2new/train_base/<dataset>/shots_<K>/<T>/<cfg>/seed<S>`` (train on
  the base classes; its final test is the base accuracy) and ``<out>/base2new/test_new/...``
  (the same weights evaluated on the new classes).
* few-shot (all classes) and the source training of cross-dataset / domain generalization:
  ``<out>/<dataset>/<T>/<cfg>_<K>shots/seed<S>`` (upstream ``main.sh`` / ``xd_train.sh``), so a
  16-shot few-shot run on the source is reused as the cross-dataset source run.
* cross-dataset / DG evaluation: ``<out>/evaluation/<T>/<cfg>_<K>shots/<dataset>/seed<S>``
  (upstream ``xd_test.sh``; the target's full test set, no ``DATASET.NUM_SHOTS``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from ..cli import build_parser, setup_cfg
from ..errors import DasslLiteError
from .jobs import Job
from .resolve import DatasetConfig, config_label

# Options the protocol sets itself (the tools take them as flags).
RESERVED_OPTS = {
    "DATASET.NUM_SHOTS": "--shots", "DATASET.SUBSAMPLE_CLASSES": "",
    "SEED": "--seeds", "OUTPUT_DIR": "--output-root", "DATASET.ROOT": "--root",
    "DATASET.NAME": "--datasets", "TRAINER.NAME": "--trainer",
}


@dataclass
class RunSpec:
    """What every job of one trainer shares."""

    trainer: str
    config_file: str
    root: str
    output_root: str
    imports: List[str] = field(default_factory=list)
    opts: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.opts) % 2:
            raise DasslLiteError(f"Options must be KEY VALUE pairs; got {self.opts}")
        for key in self.opts[::2]:
            if key in RESERVED_OPTS:
                flag = RESERVED_OPTS[key]
                raise DasslLiteError(f"{key} is set by the protocol" +
                                     (f"; use {flag} instead" if flag else ""))

    @property
    def cfg_label(self) -> str:
        return config_label(self.config_file)


def check_seeds_and_shots(seeds: Sequence[int], shots) -> None:
    """Raise DasslLiteError naming the flag and value: a seed below 0 (``SEED`` < 0 is an
    unseeded run: it cannot be repeated or averaged as seed N), or a seed or shot count listed
    twice (the same run would be counted twice in the mean and std). ``shots``: a list, or one
    count."""
    bad = [s for s in seeds if s < 0]
    if bad:
        raise DasslLiteError(f"--seeds must be integers >= 0 (a negative SEED is an unseeded run "
                             f"that cannot be repeated); got {' '.join(map(str, bad))}")
    for flag, values in (("--seeds", seeds), ("--shots", shots)):
        values = list(values) if isinstance(values, (list, tuple)) else []
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise DasslLiteError(f"{flag} lists {' '.join(map(str, twice))} more than once; each "
                                 f"run would be counted twice in the mean and std")


def expected_config(argv: Sequence[str]):
    """The frozen config ``tools/train.py argv`` will run with (raises on bad keys/values)."""
    cfg = setup_cfg(build_parser().parse_args(list(argv)))
    if cfg.TEST.NO_TEST:
        raise DasslLiteError("Protocols read the final test of each run; got TEST.NO_TEST True")
    return cfg


def make_job(spec: RunSpec, kind: str, dataset: DatasetConfig, seed: int, shots: int,
             output_dir: str, extra_opts: Sequence[str], train_job: Optional[Job] = None) -> Job:
    """A job running ``tools/train.py`` (``--eval-only`` of ``train_job``'s weights if given).
    A dataset without a config file (``dataset.path`` "") is named by ``DATASET.NAME``."""
    by_file = ["--dataset-config-file", dataset.path] if dataset.path else []
    by_name = [] if dataset.path else ["DATASET.NAME", dataset.name]
    flags = ["--root", spec.root, "--seed", str(seed), "--trainer", spec.trainer, *by_file,
             "--config-file", spec.config_file, "--output-dir", output_dir]
    for module in spec.imports:
        flags += ["--import", module]
    if train_job is not None:
        flags += ["--eval-only", "--model-dir", train_job.output_dir]
    opts = by_name + list(spec.opts) + list(extra_opts)
    return Job(kind, spec.trainer, dataset.label, seed, shots, output_dir, flags, opts,
               expected_config(flags + opts), train_job)


def base2new_dir(spec: RunSpec, phase: str, dataset: str, shots: int, seed: int) -> str:
    return os.path.join(spec.output_root, "base2new", phase, dataset, f"shots_{shots}",
                        spec.trainer, spec.cfg_label, f"seed{seed}")


def fewshot_dir(spec: RunSpec, dataset: str, shots: int, seed: int) -> str:
    return os.path.join(spec.output_root, dataset, spec.trainer, f"{spec.cfg_label}_{shots}shots",
                        f"seed{seed}")


def evaluation_dir(spec: RunSpec, dataset: str, shots: int, seed: int) -> str:
    return os.path.join(spec.output_root, "evaluation", spec.trainer,
                        f"{spec.cfg_label}_{shots}shots", dataset, f"seed{seed}")


def plan_base2new(spec: RunSpec, datasets: Sequence[DatasetConfig], seeds: Sequence[int],
                  shots: int) -> List[Job]:
    """Per dataset and seed: train on the base classes, then evaluate on the new classes."""
    jobs = []
    for d in datasets:
        for seed in seeds:
            opts = ["DATASET.NUM_SHOTS", str(shots), "DATASET.SUBSAMPLE_CLASSES"]
            train_dir = base2new_dir(spec, "train_base", d.label, shots, seed)
            test_dir = base2new_dir(spec, "test_new", d.label, shots, seed)
            train = make_job(spec, "train_base", d, seed, shots, train_dir, opts + ["base"])
            test = make_job(spec, "test_new", d, seed, shots, test_dir, opts + ["new"],
                            train_job=train)
            jobs += [train, test]
    return jobs


def fewshot_job(spec: RunSpec, dataset: DatasetConfig, shots: int, seed: int) -> Job:
    """Train on ``shots`` images of every class; the final test is the result."""
    output_dir = fewshot_dir(spec, dataset.label, shots, seed)
    return make_job(spec, "train", dataset, seed, shots, output_dir,
                    ["DATASET.NUM_SHOTS", str(shots), "DATASET.SUBSAMPLE_CLASSES", "all"])


def plan_fewshot(spec: RunSpec, datasets: Sequence[DatasetConfig], seeds: Sequence[int],
                 shots_list: Sequence[int]) -> List[Job]:
    """Per dataset, shot count and seed: one training run on all classes."""
    return [fewshot_job(spec, d, k, s) for d in datasets for k in shots_list for s in seeds]


def plan_crossdataset(spec: RunSpec, source: DatasetConfig, targets: Sequence[DatasetConfig],
                      seeds: Sequence[int], shots: int) -> List[Job]:
    """Per seed: train on the source (all classes), then evaluate those weights on each target."""
    jobs = []
    for seed in seeds:
        train = fewshot_job(spec, source, shots, seed)
        jobs.append(train)
        for t in targets:
            jobs.append(make_job(spec, "test", t, seed, shots,
                                 evaluation_dir(spec, t.label, shots, seed), [], train_job=train))
    return jobs
