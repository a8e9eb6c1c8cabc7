"""``dassl-cache`` / ``tools/cache.py``: show the feature cache, or clear what it wrote.

``clear`` deletes only the cache's own buckets: folders whose ``meta.json`` is a JSON object with
the bucket keys (see :meth:`~.feature_cache.FeatureCache.bucket`) and that hold nothing but that
file, ``seg-*`` segment files and the temporary files of their atomic writes. A folder holding
anything else (a user's file or folder, a bucket with a foreign file) is refused as a whole,
naming those entries, and nothing is deleted. ``show`` is :func:`.feature_cache.main`'s.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from typing import List, Optional, Sequence, Tuple

from ..errors import DasslLiteError
from .feature_cache import FeatureCache
from .feature_cache import main as show_main

BUCKET_KEYS = ("encoder_sha256", "dtype", "transform")  # always in a bucket's meta.json
META = "meta.json"


def is_bucket(path: str) -> bool:
    """Whether ``path`` is a folder the feature cache made: its ``meta.json`` parses to a dict
    holding the bucket keys."""
    try:
        with open(os.path.join(path, META)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and all(k in meta for k in BUCKET_KEYS)


def _is_cache_file(name: str) -> bool:
    """A file the cache writes inside a bucket (segments, meta, their temporary files)."""
    if name == META or name.startswith("seg-"):
        return True
    return name.endswith(".tmp") and (name.startswith(".seg-") or name.startswith(f".{META}."))


def foreign_entries(root: str) -> Tuple[List[str], List[str]]:
    """(buckets, foreign entries) directly under ``root``; a foreign entry is anything the
    cache did not write (named relative to ``root``, folders with a trailing slash)."""
    buckets, foreign = [], []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path) and is_bucket(path):
            inside = [n for n in sorted(os.listdir(path)) if not _is_cache_file(n)
                      or os.path.isdir(os.path.join(path, n))]
            foreign += [os.path.join(name, n) + ("/" if os.path.isdir(os.path.join(path, n))
                                                 else "") for n in inside]
            buckets.append(path)
        else:
            foreign.append(name + ("/" if os.path.isdir(path) else ""))
    return buckets, foreign


def clear_cache(root: str) -> Tuple[int, int]:
    """Delete the buckets under ``root`` when it holds nothing else; returns (buckets, bytes
    freed). Refuses (:class:`DasslLiteError`, nothing deleted) a folder with foreign entries."""
    root = os.path.abspath(root)
    if not os.path.exists(root):
        return 0, 0
    if not os.path.isdir(root):
        raise DasslLiteError(f"--dir {root} is a file, not a feature cache folder; nothing deleted")
    buckets, foreign = foreign_entries(root)
    if foreign:
        shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more"
                                           if len(foreign) > 10 else "")
        raise DasslLiteError(
            f"{root} is not (only) a feature cache: it holds {shown}, which the cache did not "
            f"write (its buckets are folders with a {META}). Nothing deleted; point --dir at "
            f"the cache folder itself (DATALOADER.FEATURE_CACHE.DIR), or remove those entries")
    freed = 0
    for path in buckets:
        freed += sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))
        shutil.rmtree(path)
    return len(buckets), freed


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``dassl-cache show|clear [--dir DIR]``; ``clear`` as :func:`clear_cache` says."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "clear" not in argv:
        return show_main(argv)
    import argparse

    parser = argparse.ArgumentParser(prog="dassl-cache clear", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["clear"])
    parser.add_argument("--dir", default="", help="cache root (DATALOADER.FEATURE_CACHE.DIR)")
    args = parser.parse_args(argv)
    root = FeatureCache(args.dir).root
    if not os.path.exists(root):
        print(f"Nothing to clear: {root} does not exist")
        return 0
    try:
        count, freed = clear_cache(root)
    except DasslLiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Cleared {root}: {count} bucket(s), {freed / 2**20:.1f} MiB freed")
    return 0
