"""The files of the feature cache (:mod:`dassl_lite.data.feature_cache`) and their checks.

A bucket's ``meta.json`` records what determines its features. A segment's ``.keys.json`` records
its entry keys and the size and sha256 of its ``.npy`` (and of the keys), written after the
``.npy`` and checked on every read: changed or truncated bytes are never served.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

from ..errors import DasslLiteError

SEGMENT_FORMAT = "dassl_lite feature segment v2"
META_FIELDS = ("encoder_sha256", "dtype", "transform", "precision")
STORE_DTYPE_NAMES = ("fp16", "fp32")


class FeatureCacheError(DasslLiteError):
    """A file of the feature cache that is not what the cache writes (names it)."""


def read_bucket_meta(path: str) -> Dict[str, str]:
    """The ``meta.json`` of a bucket; :class:`FeatureCacheError` naming the file and what was
    expected when it is not one the cache wrote."""
    expected = (f"expected a JSON object with the string fields {', '.join(META_FIELDS)} "
                f"(dtype one of {', '.join(STORE_DTYPE_NAMES)}), as the feature cache writes it")
    try:
        with open(path) as f:
            meta = json.load(f)
    except ValueError as e:
        raise FeatureCacheError(f"Feature cache bucket metadata {path} is not valid JSON ({e}); "
                                f"{expected}") from None
    if not isinstance(meta, dict):
        got = f"a JSON {type(meta).__name__}"
    else:
        bad = [k for k in META_FIELDS if not isinstance(meta.get(k), str)]
        got = (f"missing or non-string field(s) {', '.join(bad)}" if bad else
               f"dtype {meta['dtype']!r}" if meta["dtype"] not in STORE_DTYPE_NAMES else "")
    if got:
        raise FeatureCacheError(f"Feature cache bucket metadata {path} is malformed: {got}; "
                                f"{expected}")
    return meta


class SegmentError(ValueError):
    """A committed segment that must not be served: ``reason`` says why, ``path`` which file."""

    def __init__(self, reason: str, path: str = ""):
        super().__init__(f"{path} {reason}" if path else reason)
        self.reason, self.path = reason, path


@dataclass(frozen=True)
class SegmentRecord:
    """What a segment's keys file records: its keys and the size and sha256 of its ``.npy``."""

    keys: List[str]
    npy_bytes: int
    npy_sha256: str


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _keys_digest(keys: Sequence[str]) -> str:
    return _sha256(json.dumps(list(keys), separators=(",", ":")).encode())


def segment_record(keys: Sequence[str], npy: bytes) -> Dict[str, object]:
    """The content of a segment's keys file: its keys, and the size and sha256 of its ``.npy``
    file and of its keys, checked whenever the segment is read."""
    return {"format": SEGMENT_FORMAT, "rows": len(keys), "npy_bytes": len(npy),
            "npy_sha256": _sha256(npy), "keys_sha256": _keys_digest(keys), "keys": list(keys)}


def parse_keys_file(path: str) -> SegmentRecord:
    """The record of the keys file ``path``; :class:`SegmentError` when it is not one this
    version wrote whole (a list of keys without hashes was written by an older dassl_lite)."""
    with open(path) as f:
        try:
            data = json.load(f)
        except ValueError as e:
            raise SegmentError(f"is not valid JSON ({e})") from None
    if isinstance(data, list):
        raise SegmentError("has no integrity hash (written by an older dassl_lite)")
    fields = {"format": str, "rows": int, "npy_bytes": int, "npy_sha256": str,
              "keys_sha256": str, "keys": list}
    if (not isinstance(data, dict) or data.get("format") != SEGMENT_FORMAT
            or any(not isinstance(data.get(k), t) for k, t in fields.items())):
        raise SegmentError(f"is not a feature-cache keys file: expected a JSON object with "
                           f"format {SEGMENT_FORMAT!r} and the fields {', '.join(fields)}")
    if len(data["keys"]) != data["rows"] or _keys_digest(data["keys"]) != data["keys_sha256"]:
        raise SegmentError("does not match its keys_sha256 (the file changed after it was "
                           "written)")
    return SegmentRecord(data["keys"], data["npy_bytes"], data["npy_sha256"])


def load_verified(npy_path: str, segment: SegmentRecord) -> np.ndarray:
    """The features [rows, E] of a segment, read whole and checked against its keys file's
    size and sha256 before they are parsed: changed or truncated bytes raise
    :class:`SegmentError` (``FileNotFoundError``: the segment is gone)."""
    with open(npy_path, "rb") as f:
        data = f.read()
    if len(data) < segment.npy_bytes:
        raise SegmentError(f"is truncated: {len(data):,} of {segment.npy_bytes:,} bytes")
    if len(data) != segment.npy_bytes or _sha256(data) != segment.npy_sha256:
        raise SegmentError("does not match its sha256 (its bytes changed after it was written)")
    arr = np.load(io.BytesIO(data), allow_pickle=False)
    if arr.ndim != 2 or arr.shape[0] != len(segment.keys):
        raise SegmentError(f"holds an array of shape {arr.shape}; expected "
                           f"[{len(segment.keys)}, E]")  # a writer's bug, never a user's edit
    return arr
