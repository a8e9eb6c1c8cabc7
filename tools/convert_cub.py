#!/usr/bin/env python
"""Write KMnP/vpt's CUB split files (``train.json``, ``val.json``, ``test.json``) from the official
CUB-200-2011 annotation files.

    python tools/convert_cub.py --root $DATA            # finds $DATA/CUB_200_2011[/CUB_200_2011]
    python tools/convert_cub.py --root $DATA --out /elsewhere --val-fraction 0.1 --seed 1

Each file maps an image path under ``images/`` to its official class id (1-based, as in
``image_class_labels.txt``), the format the VPT code reads. ``test.json`` is the official test
split; ``val.json`` takes ``round(n * val_fraction)`` of each class's official train images, drawn
with ``--seed``; the defaults (0.1, seed 1) give exactly the split that ``CUB200`` builds from the
official files. Existing files are only replaced with ``--force``; writes are atomic.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # datasets/ is a repository-root package

from dassl_lite.data import Datum  # noqa: E402
from dassl_lite.data.splits import split_trainval  # noqa: E402
from dassl_lite.errors import DasslLiteError  # noqa: E402
from dassl_lite.utils.io import atomic_write_json  # noqa: E402
from datasets.benchmark import SPLIT_SEED  # noqa: E402
from datasets.cub200 import P_VAL, find_cub_dir, official_items  # noqa: E402

logger = logging.getLogger("convert_cub")


def convert(root: str, out: str = "", val_fraction: float = P_VAL, seed: int = SPLIT_SEED,
            force: bool = False) -> Dict[str, str]:
    """Write the three JSON files; returns ``{split: path}``."""
    if not 0 < val_fraction < 1:  # also refuses NaN
        raise DasslLiteError(f"--val-fraction must lie strictly between 0 and 1 (the share of "
                             f"each class's official train images kept for val); got "
                             f"{val_fraction}")
    folder = find_cub_dir(os.path.abspath(os.path.expanduser(root)))
    if not os.path.isfile(os.path.join(folder, "images.txt")):
        raise DasslLiteError(f"no CUB-200-2011 annotation files under {root} (looked for "
                             f"images.txt in CUB_200_2011/, CUB_200_2011/CUB_200_2011/ and the "
                             f"folder itself)")
    train_rows, test_rows = official_items(folder, DasslLiteError)
    _check_val_fraction(train_rows, val_fraction)
    items = [Datum(impath=rel, label=cid - 1) for rel, cid, _ in train_rows]
    train, val = split_trainval(items, p_val=val_fraction, seed=seed)
    splits = {"train": _as_map(train), "val": _as_map(val),
              "test": {rel: cid for rel, cid, _ in test_rows}}
    out = out or folder
    paths = {name: os.path.join(out, f"{name}.json") for name in splits}
    existing = [p for p in paths.values() if os.path.exists(p)]
    if existing and not force:
        raise DasslLiteError(f"{', '.join(existing)} exist; pass --force to replace them")
    for name, mapping in splits.items():
        atomic_write_json(paths[name], mapping)
        logger.info("Wrote %s (%d images)", paths[name], len(mapping))
    return paths


def _check_val_fraction(rows, val_fraction: float) -> None:
    """Each class must keep at least one train and one val image (``round(n * fraction)`` val)."""
    counts = Counter((cid, name) for _, cid, name in rows)
    for (_, name), n in sorted(counts.items()):
        n_val = round(n * val_fraction)
        if not 0 < n_val < n:
            raise DasslLiteError(
                f"--val-fraction {val_fraction} leaves class {name} ({n} official train images) "
                f"with {n_val} val and {n - n_val} train images; every class needs at least one "
                f"of each")


def _as_map(items: List[Datum]) -> Dict[str, int]:
    return {item.impath: item.label + 1 for item in items}


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="folder holding CUB_200_2011/ (or the CUB folder)")
    p.add_argument("--out", default="", help="where to write the files (default: the CUB folder)")
    p.add_argument("--val-fraction", type=float, default=P_VAL)
    p.add_argument("--seed", type=int, default=SPLIT_SEED)
    p.add_argument("--force", action="store_true", help="replace existing files")
    args = p.parse_args(argv)
    try:
        convert(args.root, args.out, args.val_fraction, args.seed, args.force)
    except DasslLiteError as e:
        logger.error("error: %s", e)
        return 2
    except OSError as e:  # writing the files
        logger.error("error: cannot write %s: %s", e.filename, e.strerror or e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
