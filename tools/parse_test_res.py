#!/usr/bin/env python
r"""Mean and std over seeds of the result lines in upstream-style ``log.txt`` files.

    python tools/parse_test_res.py output/base2new/train_base/dtd/shots_16/CoOp/vit_b16_ctxv1
    python tools/parse_test_res.py output/base2new/test_new/dtd/shots_16/CoOp/vit_b16_ctxv1 \
        --test-log
    python tools/parse_test_res.py output/evaluation/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1_16shots \
        --test-log --multi-exp

DIR holds one folder per seed (seed1/log.txt, ...); with --multi-exp it holds experiments
(one per folder, e.g. one per target dataset), each holding seed folders. Same flags and
output as upstream CoOp/MaPLe parse_test_res.py (std is np.std's population std; --ci95 gives
1.96 * std / sqrt(n)). A run without a result line is an error, not left out of the mean.
"""
import argparse
import os
import sys
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from dassl_lite.protocols.logparse import (  # noqa: E402
    MissingResultError, parse_directory, run_dirs,
)
from dassl_lite.protocols.stats import ci95, mean_std  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("directory", type=str, help="path to directory")
    p.add_argument("--ci95", action="store_true", help="compute 95%% confidence interval")
    p.add_argument("--test-log", action="store_true", help="parse test-only logs")
    p.add_argument("--multi-exp", action="store_true", help="parse multiple experiments")
    p.add_argument("--keyword", default="accuracy", type=str, help="which keyword to extract")
    return p.parse_args(argv)


def summarize(directory: str, args: argparse.Namespace) -> float:
    """Print each run's value and the summary of ``directory``; returns the mean."""
    print(f"Parsing files in {directory}")
    results = parse_directory(directory, args.keyword, args.test_log)
    for r in results:
        print(f"file: {r.log_file}. {args.keyword}: {r.value:.2f}%.")
    values: List[float] = [r.value for r in results]
    mean, std = mean_std(values)
    spread = ci95(values) if args.ci95 else std
    print("===")
    print(f"Summary of directory: {directory}")
    print(f"* {args.keyword}: {mean:.2f}% +- {spread:.2f}%")
    print("===")
    return mean


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if not args.multi_exp:
            summarize(args.directory, args)
            return 0
        exps = run_dirs(args.directory)
        if not exps:
            raise MissingResultError(f"No experiment directories in {args.directory}")
        means = [summarize(exp, args) for exp in exps]
        print("Average performance")
        print(f"* {args.keyword}: {mean_std(means)[0]:.2f}%")
    except (MissingResultError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
