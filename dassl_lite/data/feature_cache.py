"""An on-disk cache of frozen image features, shared by every run, seed and trainer.

Layout under the cache root (``DATALOADER.FEATURE_CACHE.DIR``, else ``$DASSL_LITE_FEATURE_CACHE``,
else ``~/.cache/dassl_lite/features``)::

    <root>/<bucket>/meta.json               what determines the features of this bucket
    <root>/<bucket>/seg-<id>.npy            features [n, E] (fp16, bf16-as-fp32 or fp32)
    <root>/<bucket>/seg-<id>.keys.json      the n entry keys, in row order

A *bucket* is one (image encoder weights digest, dtype, transform) triple; an *entry key* names
one image file by identity (real path, size, mtime in ns) plus a view tag (``test`` or
``view<k>``). A changed backbone, dtype or transform gives another bucket; a changed image file
another key. Segments are immutable: each fill writes a new one, the ``.npy`` first and then the
``.keys.json``, each to a temporary name and renamed, so a reader never sees a torn entry and
several processes may fill one bucket at once (at worst both encode the same images). Features
are read through ``np.load(mmap_mode="r")``. When the cache grows past its size bound, whole
segments are evicted, least recently used first.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..utils.io import atomic_write, atomic_write_json

logger = logging.getLogger(__name__)

ENV_DIR = "DASSL_LITE_FEATURE_CACHE"
KEYS_SUFFIX = ".keys.json"
_STORE_DTYPES = {"fp16": np.float16, "fp32": np.float32}


def default_cache_dir() -> str:
    """``$DASSL_LITE_FEATURE_CACHE`` or ``~/.cache/dassl_lite/features``."""
    return os.environ.get(ENV_DIR) or os.path.join(os.path.expanduser("~"), ".cache",
                                                   "dassl_lite", "features")


def module_digest(module: torch.nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``module``'s parameters and buffers."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def image_identity(path: str) -> str:
    """``realpath|size|mtime_ns`` of an image file: a rewritten or replaced file changes it."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return f"{real}|{st.st_size}|{st.st_mtime_ns}"


def store_dtype_name(setting: str, model_dtype: torch.dtype) -> str:
    """The storage dtype for ``DATALOADER.FEATURE_CACHE.DTYPE``: ``auto`` keeps the model's
    features exactly (fp16 for an fp16 model, fp32 otherwise; bf16 values are exact in fp32)."""
    if setting == "auto":
        return "fp16" if model_dtype == torch.float16 else "fp32"
    if setting not in _STORE_DTYPES:
        raise ValueError(f"DATALOADER.FEATURE_CACHE.DTYPE must be one of auto, fp16, fp32; "
                         f"got {setting!r}")
    return setting


@dataclass
class CacheStats:
    """What one lookup/fill did (logged, and summed by the sweep benchmark)."""

    hits: int = 0
    encoded: int = 0


# keys file path -> its keys, for committed (hence immutable) segments read by this process
_SEGMENT_KEYS: Dict[str, List[str]] = {}


class FeatureBucket:
    """The features of one (encoder, dtype, transform) triple; see the module docstring."""

    def __init__(self, cache: "FeatureCache", directory: str, meta: Dict[str, str]):
        self.cache = cache
        self.dir = directory
        self.meta = meta
        self.dtype_name = meta["dtype"]
        os.makedirs(directory, exist_ok=True)
        meta_path = os.path.join(directory, "meta.json")
        if not os.path.isfile(meta_path):
            atomic_write_json(meta_path, meta)

    def _segments(self) -> List[str]:
        """Committed segment ids (those whose keys file exists)."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(n[:-len(KEYS_SUFFIX)] for n in names if n.endswith(KEYS_SUFFIX))

    def index(self) -> Dict[str, Tuple[str, int]]:
        """Entry key -> (segment id, row) over every committed segment. Segments are immutable,
        so each one's keys file is parsed once per process (remembered while it is listed)."""
        out: Dict[str, Tuple[str, int]] = {}
        segments = self._segments()
        listed = {os.path.join(self.dir, seg + KEYS_SUFFIX) for seg in segments}
        for path in [p for p in _SEGMENT_KEYS if os.path.dirname(p) == self.dir]:
            if path not in listed:
                del _SEGMENT_KEYS[path]  # evicted or cleared
        for seg in segments:
            path = os.path.join(self.dir, seg + KEYS_SUFFIX)
            keys = _SEGMENT_KEYS.get(path)
            if keys is None:
                try:
                    with open(path) as f:
                        keys = json.load(f)
                except (OSError, ValueError):
                    continue  # evicted meanwhile, or not ours: treated as absent
                if not isinstance(keys, list):
                    continue  # not ours
                _SEGMENT_KEYS[path] = keys
            for row, key in enumerate(keys):
                out.setdefault(key, (seg, row))
        return out

    def read(self, keys: Sequence[str]) -> Tuple[Optional[torch.Tensor], List[int]]:
        """Features [len(keys), E] (float32) of the keys found, and the positions not found
        (their rows are zero)."""
        index = self.index()
        missing = [i for i, k in enumerate(keys) if k not in index]
        found = [i for i, k in enumerate(keys) if k in index]
        if not found:
            return None, missing
        by_seg: Dict[str, List[int]] = {}
        for i in found:
            by_seg.setdefault(index[keys[i]][0], []).append(i)
        out = None
        for seg, positions in by_seg.items():
            arr = np.load(os.path.join(self.dir, seg + ".npy"), mmap_mode="r")
            rows = np.asarray([index[keys[i]][1] for i in positions])
            block = torch.from_numpy(np.asarray(arr[rows], dtype=np.float32))
            if out is None:
                out = torch.zeros(len(keys), block.shape[1])
            out[positions] = block
            os.utime(os.path.join(self.dir, seg + KEYS_SUFFIX))  # recently used
        return out, missing

    def write(self, keys: Sequence[str], features: torch.Tensor) -> torch.Tensor:
        """Add a segment holding ``features`` [n, E] under ``keys`` (atomic, see the docstring);
        returns the values as stored (float32 after the storage dtype), as :meth:`read` gives
        them back."""
        if len(keys) != features.shape[0]:
            raise ValueError(f"{len(keys)} keys for {features.shape[0]} feature rows")
        seg = f"seg-{uuid.uuid4().hex}"
        arr = features.detach().float().cpu().numpy().astype(_STORE_DTYPES[self.dtype_name])
        atomic_write(os.path.join(self.dir, seg + ".npy"), lambda f: np.save(f, arr))
        keys_path = os.path.join(self.dir, seg + KEYS_SUFFIX)
        atomic_write_json(keys_path, list(keys))
        _SEGMENT_KEYS[keys_path] = list(keys)
        self.cache.enforce_bound(keep=os.path.join(self.dir, seg))
        return torch.from_numpy(arr.astype(np.float32))


class FeatureCache:
    """The cache root with its size bound; :meth:`bucket` gives the store for one encoder."""

    def __init__(self, root: str = "", max_bytes: int = 20 * 2**30):
        self.root = os.path.abspath(root or default_cache_dir())
        self.max_bytes = int(max_bytes)

    def bucket(self, encoder_digest: str, dtype_name: str, transform: str,
               precision: str = "fp32") -> FeatureBucket:
        """The bucket of features of this encoder, storage dtype, transform and compute precision
        (``amp`` features differ from ``fp32`` ones)."""
        meta = {"encoder_sha256": encoder_digest, "dtype": dtype_name, "transform": transform,
                "precision": precision}
        name = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:24]
        return FeatureBucket(self, os.path.join(self.root, name), meta)

    def segments(self) -> List[Tuple[float, int, str]]:
        """(last use, bytes, path stem) of every committed segment."""
        out = []
        if not os.path.isdir(self.root):
            return out
        for bucket in os.listdir(self.root):
            bdir = os.path.join(self.root, bucket)
            if not os.path.isdir(bdir):
                continue
            for name in os.listdir(bdir):
                if not name.endswith(KEYS_SUFFIX):
                    continue
                stem = os.path.join(bdir, name[:-len(KEYS_SUFFIX)])
                try:
                    used = os.path.getmtime(stem + KEYS_SUFFIX)
                    size = os.path.getsize(stem + ".npy") + os.path.getsize(stem + KEYS_SUFFIX)
                except OSError:
                    continue
                out.append((used, size, stem))
        return out

    def enforce_bound(self, keep: str = "") -> int:
        """Evict least recently used segments (never ``keep``) until the cache fits its bound;
        returns the number evicted."""
        segs = sorted(self.segments())
        total = sum(s[1] for s in segs)
        evicted = 0
        for _, size, stem in segs:
            if total <= self.max_bytes:
                break
            if stem == keep:
                continue
            for suffix in (KEYS_SUFFIX, ".npy"):  # keys first: the entry disappears atomically
                try:
                    os.remove(stem + suffix)
                except FileNotFoundError:
                    pass
            total -= size
            evicted += 1
        if evicted:
            logger.info(f"Feature cache {self.root}: evicted {evicted} segment(s) to stay under "
                        f"{self.max_bytes / 2**30:.1f} GiB")
        return evicted

    def summary(self) -> List[Dict[str, object]]:
        """One row per bucket: its meta, entries, segments and bytes."""
        rows = []
        if not os.path.isdir(self.root):
            return rows
        for bucket in sorted(os.listdir(self.root)):
            bdir = os.path.join(self.root, bucket)
            meta_path = os.path.join(bdir, "meta.json")
            if not os.path.isfile(meta_path):
                continue
            with open(meta_path) as f:
                meta = json.load(f)
            b = FeatureBucket(self, bdir, meta)
            segs = b._segments()
            size = sum(os.path.getsize(os.path.join(bdir, n)) for n in os.listdir(bdir))
            rows.append({"bucket": bucket, "entries": len(b.index()), "segments": len(segs),
                         "bytes": size, **meta})
        return rows

    def clear(self) -> int:
        """Remove every bucket; returns the bytes freed."""
        freed = sum(r["bytes"] for r in self.summary())
        if os.path.isdir(self.root):
            for name in os.listdir(self.root):
                path = os.path.join(self.root, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
        return freed


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` that is the same in every process and Python version."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``dassl-cache show|clear [--dir DIR]``: list the cache's buckets or empty it."""
    import argparse

    from tabulate import tabulate

    parser = argparse.ArgumentParser(prog="dassl-cache", description=(
        "Show or clear the on-disk cache of frozen image features "
        f"(default: ${ENV_DIR} or ~/.cache/dassl_lite/features)."))
    parser.add_argument("command", choices=["show", "clear"])
    parser.add_argument("--dir", default="", help="cache root (DATALOADER.FEATURE_CACHE.DIR)")
    args = parser.parse_args(argv)
    cache = FeatureCache(args.dir)
    if args.command == "clear":
        freed = cache.clear()
        print(f"Cleared {cache.root}: {freed / 2**20:.1f} MiB freed")
        return 0
    rows = cache.summary()
    table = [[r["bucket"], r["entries"], r["segments"], f"{r['bytes'] / 2**20:.1f}", r["dtype"],
              r["precision"], str(r["encoder_sha256"])[:12], str(r["transform"])[:60]]
             for r in rows]
    print(f"Feature cache {cache.root}: {len(rows)} bucket(s), "
          f"{sum(r['bytes'] for r in rows) / 2**20:.1f} MiB")
    if table:
        print(tabulate(table, headers=["bucket", "entries", "segments", "MiB", "dtype",
                                       "precision", "encoder", "transform"]))
    return 0
