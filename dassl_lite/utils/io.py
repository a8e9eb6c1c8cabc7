"""Atomic file writes: a crash mid-write never leaves a truncated file behind.

A full disk (``ENOSPC``, or a quota: ``EDQUOT``) raises :class:`DiskFullError`, one message that
names the directory, the bytes the write needed and the bytes free; the temporary file is
removed and the previous file at the path is left as it was.
"""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tempfile
from typing import Any, Callable, IO, Optional, Sequence

import torch

from ..errors import DasslLiteError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(DasslLiteError, OSError):
    """No space left where a file was written; nothing half-written was left behind."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28]"
        return str(self.strerror)


def _free_bytes(directory: str) -> Optional[int]:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def disk_full_error(path: str, needed: Optional[int]) -> DiskFullError:
    """The one-message error for a write of ``needed`` bytes to ``path`` that hit a full disk."""
    directory = os.path.dirname(os.path.abspath(path))
    free = _free_bytes(directory)
    need = f"{needed:,} bytes" if needed is not None else "more space"
    have = f"{free:,} bytes free" if free is not None else "free space unknown"
    return DiskFullError(
        errno.ENOSPC,
        f"No space left on device in {directory}: writing {os.path.basename(path)} needs {need} "
        f"({have}). Nothing was half-written; the previous files there are intact. Free some "
        f"space (or choose another --output-dir) and run the same command again to resume.",
    )


def atomic_write(path: str, write: Callable[[IO[bytes]], None],
                 size: Optional[int] = None) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``.

    The file gets the permissions a plain ``open(path, "wb")`` would give (0666 less the umask),
    not ``mkstemp``'s private 0600. ``size`` (bytes, when known) goes into a disk-full message."""
    directory = os.path.dirname(os.path.abspath(path))
    check_writable_path(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        full = isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS
        if full and not isinstance(e, DasslLiteError):
            raise disk_full_error(path, size) from None
        raise


def check_writable_path(path: str) -> None:
    """Raise DasslLiteError naming ``path`` when a file cannot be written there: it is a folder
    (never replaced), or a folder above it is a file."""
    if os.path.isdir(path):
        raise DasslLiteError(f"Cannot write {path}: it is a folder; give the path of a file to "
                             f"write (nothing was written)")
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise DasslLiteError(f"Cannot write {path}: {parent} is a file, not a folder "
                             f"(nothing was written)")


def check_not_inputs(outputs: Sequence[str], inputs: Sequence[str]) -> None:
    """Raise DasslLiteError naming both when a file to be written is one of the inputs (or a
    link to one): it would be replaced by the command's own output."""
    real = {os.path.realpath(i): i for i in inputs}
    for out in outputs:
        given = real.get(os.path.realpath(out))
        if given is not None:
            raise DasslLiteError(f"Cannot write {out}: it is the input {given}, which writing "
                                 f"would replace (nothing was written); choose another output "
                                 f"folder")


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(data), size=len(data))


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` that either writes the whole file or leaves the old one untouched.

    The object is serialized in memory first, so the size is known before the disk is touched."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def load_yaml(stream: Any) -> Any:
    """``yaml.safe_load`` through libyaml's C parser when PyYAML has it (the same safe YAML 1.1
    types, about ten times faster on config files), else the pure-Python one."""
    import yaml

    return yaml.load(stream, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def plain_config(cfg: Any) -> Any:
    """A yacs config as plain data, as ``yaml.safe_load(cfg.dump())`` gives it back (nested
    dicts; tuples as lists), without the YAML round trip."""
    if isinstance(cfg, dict):
        return {k: plain_config(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [plain_config(v) for v in cfg]
    return cfg
