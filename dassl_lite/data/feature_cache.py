"""An on-disk cache of frozen image features, shared by every run, seed and trainer.

Layout under the cache root (``DATALOADER.FEATURE_CACHE.DIR``, else ``$DASSL_LITE_FEATURE_CACHE``,
else ``~/.cache/dassl_lite/features``)::

    <root>/<bucket>/meta.json               what determines the features of this bucket
    <root>/<bucket>/seg-<id>.npy            features [n, E] (fp16, bf16-as-fp32 or fp32)
    <root>/<bucket>/seg-<id>.keys.json      the n entry keys, in row order, and the size and
                                            sha256 of the .npy (:mod:`.feature_files`)

A *bucket* is one (image encoder weights digest, dtype, transform) triple (features normalised,
or in buckets of their own before the normalisation); an *entry key* names
one image file by identity (real path, size, mtime in ns) plus a view tag (``test`` or
``view<k>``). A changed backbone, dtype or transform gives another bucket; a changed image file
another key. Segments are immutable: each fill writes a new one, the ``.npy`` first and then the
``.keys.json``, each to a temporary name and renamed, so a reader never sees a torn entry and
several processes may fill one bucket at once (at worst both encode the same images).

Every read of a segment reads its ``.npy`` whole and checks its size and sha256 before parsing
it, so changed or truncated bytes are never served. A bad segment (changed, truncated, keys
without features, a keys file that is not JSON or has no hashes, as older versions wrote) is
named in a warning, its entries count as misses (encoded again and stored in a new segment),
and it is removed, so one bad file costs one refill. A bucket that cannot be written (read-only
file system, no permission) serves its hits and writes nothing, not even last-use times; what
it misses is encoded for the run and not stored. When the cache grows past its size bound,
whole segments are evicted, least recently used first.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import sys
import uuid
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from ..utils.io import atomic_write_bytes, atomic_write_json
from .feature_files import (
    FeatureCacheError, SegmentError, SegmentRecord, load_verified, parse_keys_file,
    read_bucket_meta, segment_record,
)

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


# keys file path -> its parsed record, for committed (hence immutable) segments of this process
_SEGMENTS: Dict[str, SegmentRecord] = {}
# keys files of segments found bad by this process (reported once; skipped if they remain)
_BAD: Set[str] = set()
_READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


def _is_read_only_error(e: OSError) -> bool:
    return isinstance(e, PermissionError) or e.errno in _READ_ONLY_ERRNOS


class FeatureBucket:
    """The features of one (encoder, dtype, transform) triple; see the module docstring.

    ``read_only`` (also set when the folder is not writable, or a write is refused): hits are
    served and nothing is written, not even a segment's last-use time."""

    def __init__(self, cache: "FeatureCache", directory: str, meta: Dict[str, str],
                 read_only: bool = False):
        self.cache = cache
        self.dir = directory
        self.meta = meta
        self.dtype_name = meta["dtype"]
        self.read_only = read_only
        meta_path = os.path.join(directory, "meta.json")
        if read_only:
            return
        if os.path.isdir(directory) and not os.access(directory, os.W_OK):
            self._set_read_only("not writable by this process")
        elif not os.path.isfile(meta_path):
            try:
                os.makedirs(directory, exist_ok=True)
                atomic_write_json(meta_path, meta)
            except OSError as e:
                self._refused(e)

    def _refused(self, e: OSError) -> None:
        """A write refused for lack of permission (or a read-only file system): the bucket is
        read-only from now on; any other error is raised."""
        if not _is_read_only_error(e):
            raise e
        self._set_read_only(e.strerror or str(e))

    def _set_read_only(self, why: str) -> None:
        self.read_only = True
        logger.warning(f"Feature cache {self.dir} is read-only ({why}): its hits are served; "
                       f"features it misses are encoded for this run and not stored")

    def stored_in(self) -> str:
        """Where newly encoded features went, for log lines ("N encoded and stored in ...")."""
        return (f"but not stored ({self.dir} is read-only)" if self.read_only else
                f"and stored in {self.dir}")

    def _segments(self) -> List[str]:
        """Committed segment ids (those whose keys file exists)."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(n[:-len(KEYS_SUFFIX)] for n in names if n.endswith(KEYS_SUFFIX))

    def _record(self, seg: str) -> Optional[SegmentRecord]:
        """The parsed keys file of ``seg`` (once per process); None when it is gone or bad
        (reported and dropped: :meth:`_drop`)."""
        path = os.path.join(self.dir, seg + KEYS_SUFFIX)
        record = _SEGMENTS.get(path)
        if record is None and path not in _BAD:
            try:
                record = _SEGMENTS[path] = parse_keys_file(path)
            except FileNotFoundError:
                pass  # evicted meanwhile
            except SegmentError as e:
                self._drop(seg, SegmentError(e.reason, path))
            except OSError as e:  # unreadable (permissions): skipped, not ours to remove
                self._drop(seg, SegmentError(f"cannot be read ({e.strerror or e})", path), False)
        return record

    def _drop(self, seg: str, error: SegmentError, remove: bool = True) -> None:
        """Report a bad segment (once per process) and remove it unless the bucket is read-only,
        so that one bad file costs one refill, not one per run."""
        keys_path = os.path.join(self.dir, seg + KEYS_SUFFIX)
        _SEGMENTS.pop(keys_path, None)
        _BAD.add(keys_path)
        action = "is left in place (opened read-only)" if remove else "is left in place"
        if remove and not self.read_only:
            try:
                for suffix in (KEYS_SUFFIX, ".npy"):  # keys first, as eviction does
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(self.dir, seg + suffix))
                action = "was removed"
            except OSError as e:
                action = f"is left in place (it could not be removed: {e.strerror or e})"
        logger.warning(f"Feature cache: {error}; the entries of segment {seg} are not served "
                       f"(encoded again where needed) and the segment {action}")

    def index(self) -> Dict[str, Tuple[str, int]]:
        """Entry key -> (segment id, row) over every committed, well-formed segment. Segments
        are immutable, so each one's keys file is parsed once per process (remembered while it
        is listed)."""
        out: Dict[str, Tuple[str, int]] = {}
        segments = self._segments()
        listed = {os.path.join(self.dir, seg + KEYS_SUFFIX) for seg in segments}
        for path in [p for p in _SEGMENTS if os.path.dirname(p) == self.dir]:
            if path not in listed:
                del _SEGMENTS[path]  # evicted or cleared
        for seg in segments:
            record = self._record(seg)
            for row, key in enumerate(record.keys if record else ()):
                out.setdefault(key, (seg, row))
        return out

    def _load(self, seg: str) -> Optional[np.ndarray]:
        """The verified features of ``seg``; None when it is gone or bad (reported, dropped)."""
        keys_path = os.path.join(self.dir, seg + KEYS_SUFFIX)
        record = _SEGMENTS.get(keys_path)
        npy = os.path.join(self.dir, seg + ".npy")
        try:
            return load_verified(npy, record) if record else None  # None: evicted meanwhile
        except FileNotFoundError:
            if os.path.exists(keys_path):  # keys without their features
                self._drop(seg, SegmentError("is missing (its keys file is there)", npy))
            else:
                _SEGMENTS.pop(keys_path, None)  # evicted meanwhile
        except SegmentError as e:
            self._drop(seg, SegmentError(e.reason, npy))
        except OSError as e:
            self._drop(seg, SegmentError(f"cannot be read ({e.strerror or e})", npy), False)
        return None

    def read(self, keys: Sequence[str]) -> Tuple[Optional[torch.Tensor], List[int]]:
        """Features [len(keys), E] (float32) of the keys found, and the positions not found
        (their rows are zero). A segment is verified (size and sha256) each time it is read; a
        bad one is reported and dropped, and its keys are looked up again in the others."""
        out, todo, missing, tried = None, list(range(len(keys))), [], set()
        while todo:
            index, by_seg = self.index(), {}
            for i in todo:
                seg = index.get(keys[i], ("", 0))[0]
                if seg and seg not in tried:
                    by_seg.setdefault(seg, []).append(i)
                else:
                    missing.append(i)
            todo = []
            for seg, positions in by_seg.items():
                tried.add(seg)
                arr = self._load(seg)
                if arr is None:
                    todo += positions
                    continue
                rows = np.asarray([index[keys[i]][1] for i in positions])
                block = torch.from_numpy(arr[rows].astype(np.float32))
                if out is None:
                    out = torch.zeros(len(keys), block.shape[1])
                out[positions] = block
                self._touch(seg)
        return out, sorted(missing)

    def _touch(self, seg: str) -> None:
        """Mark ``seg`` as recently used (for eviction); nothing when read-only."""
        if self.read_only:
            return
        try:
            os.utime(os.path.join(self.dir, seg + KEYS_SUFFIX))
        except FileNotFoundError:
            pass  # evicted meanwhile
        except OSError as e:
            self._refused(e)

    def write(self, keys: Sequence[str], features: torch.Tensor) -> torch.Tensor:
        """Add a segment holding ``features`` [n, E] under ``keys`` (atomic, see the docstring;
        nothing when read-only); returns the values as stored (float32 after the storage
        dtype), as :meth:`read` gives them back."""
        if len(keys) != features.shape[0]:
            raise ValueError(f"{len(keys)} keys for {features.shape[0]} feature rows")
        arr = features.detach().float().cpu().numpy().astype(_STORE_DTYPES[self.dtype_name])
        if not self.read_only:
            try:
                self._store(list(keys), arr)
            except OSError as e:
                self._refused(e)
        return torch.from_numpy(arr.astype(np.float32))

    def _store(self, keys: List[str], arr: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, arr)
        npy = buffer.getvalue()
        seg = f"seg-{uuid.uuid4().hex}"
        os.makedirs(self.dir, exist_ok=True)
        atomic_write_bytes(os.path.join(self.dir, seg + ".npy"), npy)
        keys_path = os.path.join(self.dir, seg + KEYS_SUFFIX)
        record = segment_record(keys, npy)
        try:
            atomic_write_json(keys_path, record)
        except OSError:
            with contextlib.suppress(OSError):  # uncommitted (never listed), but not left behind
                os.remove(os.path.join(self.dir, seg + ".npy"))
            raise
        _SEGMENTS[keys_path] = SegmentRecord(keys, record["npy_bytes"], record["npy_sha256"])
        self.cache.enforce_bound(keep=os.path.join(self.dir, seg))


class FeatureCache:
    """The cache root with its size bound; :meth:`bucket` gives the store for one encoder."""

    def __init__(self, root: str = "", max_bytes: int = 20 * 2**30):
        self.root = os.path.abspath(root or default_cache_dir())
        self.max_bytes = int(max_bytes)

    def bucket(self, encoder_digest: str, dtype_name: str, transform: str,
               precision: str = "fp32", features: str = "normalised") -> FeatureBucket:
        """The bucket of features of this encoder, storage dtype, transform and compute precision
        (``amp`` features differ from ``fp32`` ones); ``features`` "unnormalised": the encoder's
        output before the L2 normalisation (DePT's head reads it), a bucket of its own."""
        meta = {"encoder_sha256": encoder_digest, "dtype": dtype_name, "transform": transform,
                "precision": precision}
        if features != "normalised":  # the normalised buckets keep their names
            meta["features"] = features
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

    def summary(self, problems: Optional[List[str]] = None) -> List[Dict[str, object]]:
        """One row per bucket: its meta, entries, segments and bytes. A bucket whose metadata is
        malformed raises :class:`FeatureCacheError`, or is left out with its message appended
        to ``problems`` when that is given."""
        rows = []
        if not os.path.isdir(self.root):
            return rows
        for bucket in sorted(os.listdir(self.root)):
            bdir = os.path.join(self.root, bucket)
            meta_path = os.path.join(bdir, "meta.json")
            if not os.path.isfile(meta_path):
                continue
            try:
                meta = read_bucket_meta(meta_path)
            except FeatureCacheError as e:
                if problems is None:
                    raise
                problems.append(str(e))
                continue
            b = FeatureBucket(self, bdir, meta, read_only=True)  # looking changes nothing
            segs = b._segments()
            size = sum(os.path.getsize(os.path.join(bdir, n)) for n in os.listdir(bdir))
            rows.append({"bucket": bucket, "entries": len(b.index()), "segments": len(segs),
                         "bytes": size, **meta})
        return rows


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` that is the same in every process and Python version."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``dassl-cache show [--dir DIR]``: list the cache's buckets. (``clear``, which deletes only
    what the cache wrote, is :func:`dassl_lite.data.cache_admin.main`'s.)"""
    import argparse

    from tabulate import tabulate

    parser = argparse.ArgumentParser(prog="dassl-cache", description=(
        "Show or clear the on-disk cache of frozen image features "
        f"(default: ${ENV_DIR} or ~/.cache/dassl_lite/features)."))
    parser.add_argument("command", choices=["show"])
    parser.add_argument("--dir", default="", help="cache root (DATALOADER.FEATURE_CACHE.DIR)")
    args = parser.parse_args(argv)
    cache = FeatureCache(args.dir)
    problems: List[str] = []
    rows = cache.summary(problems)
    table = [[r["bucket"], r["entries"], r["segments"], f"{r['bytes'] / 2**20:.1f}", r["dtype"],
              r["precision"], str(r["encoder_sha256"])[:12], str(r["transform"])[:60]]
             for r in rows]
    print(f"Feature cache {cache.root}: {len(rows)} bucket(s), "
          f"{sum(r['bytes'] for r in rows) / 2**20:.1f} MiB")
    if table:
        print(tabulate(table, headers=["bucket", "entries", "segments", "MiB", "dtype",
                                       "precision", "encoder", "transform"]))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0
