"""Atomic file writes: a crash mid-write never leaves a truncated file behind."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, IO

import torch


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``.

    The file gets the permissions a plain ``open(path, "wb")`` would give (0666 less the umask),
    not ``mkstemp``'s private 0600."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` that either writes the whole file or leaves the old one untouched."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
