#!/usr/bin/env python
r"""Draw protocol summaries and training runs as PNG and SVG (``dassl-plot`` once installed).

    python tools/plot.py fewshot output/fewshot_summary_CoOp_toy.json \
        output/fewshot_summary_MaPLe_toy.json --out plots [--dataset average] \
        [--trainers CoOp MaPLe]
    python tools/plot.py base2new output/base2new/summary_*_shots16.json --out plots
    python tools/plot.py curves output/toy_shapes/CoOp/toy_16shots/seed1 --out plots \
        [--tags train/loss train/acc] [--smooth 0.6]
    python tools/plot.py curves output/toy_shapes/CoOp/toy_16shots/seed{1,2,3} --out plots

Writes OUT/fewshot_<dataset>.{png,svg}, OUT/base2new.{png,svg}, OUT/curves_<parent>_<run>.{png,svg}
(one run) or OUT/curves_compare.{png,svg} (several runs, overlaid; ``--name`` sets the file
name) and prints their paths. ``--trainers`` picks and orders the trainers; one without a
summary among the files given is an error naming it, as is a file that is not a summary of the
protocol or lacks one of its keys. ``--smooth W`` (0 <= W < 1) draws TensorBoard's moving
average over the faint raw curve.
"""
import argparse
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from dassl_lite.errors import DasslLiteError  # noqa: E402
from dassl_lite.utils.io import check_not_inputs  # noqa: E402
from dassl_lite.plots import (FORMATS, load_summaries, plot_base2new, plot_fewshot,  # noqa: E402
                              plot_training_curves, select_trainers)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    for kind, help_ in (("fewshot", "few-shot curves from fewshot summaries"),
                        ("base2new", "base/new/HM bars from base2new summaries")):
        s = sub.add_parser(kind, help=help_)
        s.add_argument("summaries", nargs="+", help="summary_*.json files (one per trainer)")
        s.add_argument("--trainers", nargs="+", help="trainers to draw, in this order")
        if kind == "fewshot":
            s.add_argument("--dataset", default="average",
                           help="dataset label or 'average' (default)")
    c = sub.add_parser("curves", help="training curves from a run's TensorBoard events")
    c.add_argument("run_dirs", nargs="+",
                   help="runs' OUTPUT_DIRs (or their tensorboard folders); several are overlaid")
    c.add_argument("--tags", nargs="+", help="scalar tags to draw (default: all)")
    c.add_argument("--smooth", type=float, default=0.0,
                   help="moving-average weight in [0, 1), as TensorBoard's slider (default 0)")
    c.add_argument("--name", default="", help="file name without extension (default: "
                   "curves_<parent>_<run> for one run, curves_compare for several)")
    for s in sub.choices.values():
        s.add_argument("--out", default="plots", help="output folder (default ./plots)")
        s.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    return p.parse_args(argv)


def curves_name(args: argparse.Namespace) -> str:
    if args.name:
        return args.name
    if len(args.run_dirs) > 1:
        return "curves_compare"
    return "curves_" + "_".join(os.path.abspath(args.run_dirs[0]).split(os.sep)[-2:])


def run(args: argparse.Namespace) -> list:
    if args.kind == "curves":
        name = curves_name(args)
    else:
        name = f"fewshot_{args.dataset}" if args.kind == "fewshot" else "base2new"
    stem = os.path.join(args.out, name)
    inputs = args.run_dirs if args.kind == "curves" else args.summaries
    check_not_inputs([f"{stem}.{f}" for f in args.formats], inputs)  # never replace an input
    if args.kind == "curves":
        return plot_training_curves(args.run_dirs, stem, args.tags, args.formats, args.smooth)
    summaries = select_trainers(load_summaries(args.summaries, args.kind), args.trainers)
    if args.kind == "fewshot":
        return plot_fewshot(summaries, stem, args.dataset, args.formats)
    return plot_base2new(summaries, stem, args.formats)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        paths = run(args)
    except DasslLiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
