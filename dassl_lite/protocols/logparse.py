"""Reading upstream-style result lines (``* accuracy: 73.4%``) from the ``log.txt`` of seed runs,
as upstream ``parse_test_res.py`` does, for ``tools/parse_test_res.py``.

Upstream semantics kept: every non-hidden sub-directory of the directory is one run; a metric
line counts only after the end signal (``Finish training`` for training logs -- upstream MaPLe's
fork prints ``Finished training``, both are accepted -- or ``=> result`` for ``--test-log``);
the last matching line wins; the summary is the mean and population std (``np.std``), or
``1.96 * std / sqrt(n)`` with ``--ci95``.

Beyond upstream: a resumed run's later logs (``log.txt-<timestamp>``, written when ``log.txt``
already exists) are read after ``log.txt``, so the final result counts; and a run without a
result is an error naming it, never silently left out of the mean.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

TRAIN_END_SIGNALS = ("Finish training", "Finished training")
TEST_END_SIGNALS = ("=> result",)


class MissingResultError(Exception):
    """Some runs of a directory have no result line."""


@dataclass
class RunResult:
    """The value parsed for one run and the log file it came from."""

    run_dir: str
    log_file: str
    value: float


def metric_pattern(keyword: str) -> "re.Pattern[str]":
    """Upstream's result-line pattern for ``keyword`` (``* accuracy: 73.4%``)."""
    return re.compile(rf"\* {re.escape(keyword)}: ([\.\deE+-]+)%")


def log_files(run_dir: str) -> List[str]:
    """``log.txt`` then ``log.txt-<timestamp>`` files (oldest first) of one run."""
    first = os.path.join(run_dir, "log.txt")
    later = sorted(glob.glob(glob.escape(first) + "-*"))
    return ([first] if os.path.isfile(first) else []) + later


def parse_log(path: str, pattern: "re.Pattern[str]", end_signals: Sequence[str]) -> Optional[float]:
    """The last value matching ``pattern`` after an end signal line in ``path`` (None: none)."""
    value, armed = None, False
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            armed = armed or line in end_signals
            match = pattern.search(line) if armed else None
            if match:
                value = float(match.group(1))
    return value


def parse_run(run_dir: str, pattern: "re.Pattern[str]",
              end_signals: Sequence[str]) -> Optional[RunResult]:
    """The final result of one run over all its log files (later files win)."""
    found = None
    for path in log_files(run_dir):
        value = parse_log(path, pattern, end_signals)
        if value is not None:
            found = RunResult(run_dir, path, value)
    return found


def run_dirs(directory: str) -> List[str]:
    """Non-hidden sub-directories of ``directory``, sorted (upstream's ``listdir_nohidden``)."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"No directory {directory!r}")
    names = sorted(n for n in os.listdir(directory) if not n.startswith("."))
    return [os.path.join(directory, n) for n in names if os.path.isdir(os.path.join(directory, n))]


def parse_directory(directory: str, keyword: str = "accuracy",
                    test_log: bool = False) -> List[RunResult]:
    """One result per run directory of ``directory``; raises :class:`MissingResultError`
    naming every run without one."""
    pattern = metric_pattern(keyword)
    signals = TEST_END_SIGNALS if test_log else TRAIN_END_SIGNALS
    runs = run_dirs(directory)
    if not runs:
        raise MissingResultError(f"No run directories (e.g. seed1/) in {directory}")
    results, missing = [], []
    for run in runs:
        result = parse_run(run, pattern, signals)
        (results if result else missing).append(result or run)
    if missing:
        where = ", ".join(os.path.basename(m) for m in missing)
        after = " or ".join(repr(s) for s in signals)
        raise MissingResultError(
            f"No '* {keyword}: ...%' line after {after} in the log.txt of {where} (in "
            f"{directory}); unfinished or failed runs? (use --test-log for evaluation-only runs)"
        )
    return results
