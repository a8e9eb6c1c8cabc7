"""Write the toy world's datasets (ToyShapes, ToyTextures, ToySketch) in CoOp's folder layout.

    python tools/make_toy_data.py --root DATA [--datasets ToyShapes ...] [--seed 0] [--force]
    python tools/make_toy_data.py --root DATA --anomaly     (the toy anomaly world instead)
    python tools/make_toy_data.py --root DATA --vtab        (the toy VTAB-1k tasks instead)

Each dataset goes to DATA/<dataset_dir>/images/<class_folder>/<i>.png plus
DATA/<dataset_dir>/split_zhou_<Name>.json. Datasets already generated with the same parameters
are skipped. ``--contact-sheet FILE.png`` also saves a grid of sample images (one row per class,
a few samples of every domain per row). ``--anomaly`` writes the toy anomaly world instead:
DATA/toy_mvtec and DATA/toy_visa as ToyMVTec and ToyVisA read them (seed 0, the default counts;
they are also generated on first use, but ``tools/anomaly.py --table`` asks for them first).
``--vtab`` writes the three toy VTAB-1k tasks to DATA/vtab-1k-toy/<task>/ (see
``datasets/toy_vtab.py``; seed 0, also generated on first use).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # datasets/ is a repo-root package

from datasets.toy_anomaly_world import make_toy_anomaly_world  # noqa: E402
from datasets.toy_generator import CLASSNAMES, DOMAINS, render  # noqa: E402
from datasets.toy_vtab import make_toy_vtab  # noqa: E402
from datasets.toy_world import SplitCounts, make_toy_world  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="folder that receives one folder per dataset")
    parser.add_argument("--datasets", nargs="+", default=list(DOMAINS), choices=list(DOMAINS),
                        metavar="NAME", help=f"which datasets (default: all of {', '.join(DOMAINS)})")
    parser.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    d = SplitCounts()
    parser.add_argument("--counts", nargs=3, type=int, default=[d.train, d.val, d.test],
                        metavar=("TRAIN", "VAL", "TEST"),
                        help=f"images per class in each split (default {d.train} {d.val} {d.test})")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--contact-sheet", metavar="PNG", help="also save a grid of samples here")
    parser.add_argument("--anomaly", action="store_true",
                        help="write the toy anomaly world (ToyMVTec, ToyVisA) instead")
    parser.add_argument("--vtab", action="store_true",
                        help="write the toy VTAB-1k tasks (toy_colour, toy_shape, toy_position) "
                             "instead")
    return parser.parse_args(argv)


def folder_size(path: str) -> int:
    """Total bytes of the files under ``path``."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def save_contact_sheet(path: str, seed: int, per_domain: int = 4, size: int = 64) -> None:
    """One row per class, ``per_domain`` training samples of each domain side by side."""
    from PIL import Image, ImageDraw

    cell, label_w = size + 2, 110
    sheet = Image.new("RGB", (label_w + cell * per_domain * len(DOMAINS), cell * len(CLASSNAMES)),
                      "white")
    draw = ImageDraw.Draw(sheet)
    for label, classname in enumerate(CLASSNAMES):
        draw.text((4, label * cell + size // 2 - 5), f"{label} {classname}", fill="black")
        for d, domain in enumerate(DOMAINS):
            for i in range(per_domain):
                x = label_w + (d * per_domain + i) * cell
                sheet.paste(render(domain, label, i, seed, size), (x, label * cell))
    sheet.save(path)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    if args.anomaly or args.vtab:
        paths = make_toy_anomaly_world(args.root) if args.anomaly else make_toy_vtab(args.root)
        for name, path in paths.items():
            print(f"{name:12s} {path}  {folder_size(path) / 2**20:.1f} MiB")
        print(f"done in {time.perf_counter() - start:.1f} s")
        return
    paths = make_toy_world(args.root, args.datasets, seed=args.seed, counts=SplitCounts(*args.counts),
                           force=args.force, workers=args.workers)
    elapsed = time.perf_counter() - start
    for name, path in paths.items():
        print(f"{name:12s} {path}  {folder_size(path) / 2**20:.1f} MiB")
    print(f"done in {elapsed:.1f} s")
    if args.contact_sheet:
        save_contact_sheet(args.contact_sheet, args.seed)
        print(f"contact sheet: {args.contact_sheet}")


if __name__ == "__main__":
    main()
