"""Logging to the console and ``OUTPUT_DIR/log.txt`` through the ``logging`` module.

Records are written as plain messages (warnings get a ``WARNING:`` prefix), so ``log.txt`` holds
upstream's lines (``* accuracy: 73.4%``) unchanged and upstream parsers keep working.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Iterator, Optional

_HANDLER_TAG = "_dassl_lite_handler"


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        if record.levelno >= logging.WARNING:
            msg = f"{record.levelname}: {msg}"
        return msg


class _QuietFileHandler(logging.FileHandler):
    """A file handler that, when the file cannot be written (a full disk), stops writing to it
    after one line on stderr instead of printing a "--- Logging error ---" block per record."""

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            sys.stderr.write(f"warning: cannot write the log file {self.baseFilename} "
                             f"({exc.strerror or exc}); logging to the console only\n")
            self.setLevel(logging.CRITICAL + 1)
            return
        super().handleError(record)


def _log_file_path(output: str) -> str:
    if output.endswith(".txt") or output.endswith(".log"):
        path = output
    else:
        path = os.path.join(output, "log.txt")
    if os.path.exists(path):  # as Dassl: never overwrite an earlier run's log
        path += time.strftime("-%Y-%m-%d-%H-%M-%S")
    return path


def _env_rank() -> int:
    """``RANK`` under a launcher (``WORLD_SIZE > 1``), else 0; malformed values count as 0 here
    (``engine.distributed.check_launch_env`` reports them)."""
    try:
        return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    except ValueError:
        return 0


def setup_logger(output: Optional[str] = None, level: int = logging.INFO) -> Optional[str]:
    """Send log records to stdout and, when ``output`` is given, to ``output/log.txt``.

    Calling it again replaces the handlers it installed before. Returns the log file path.
    Under torchrun only rank 0 writes ``log.txt``; the other ranks print warnings and errors,
    prefixed with their rank.
    """
    rank = _env_rank()
    if rank != 0:
        output, level = None, max(level, logging.WARNING)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_TAG, False):
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
    console = logging.StreamHandler(sys.stdout)
    handlers = [console]
    path = None
    if output:
        path = _log_file_path(output)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        handlers.append(_QuietFileHandler(path, encoding="utf-8"))
    for h in handlers:
        h.setFormatter(_PlainFormatter(f"[rank {rank}] %(message)s" if rank else "%(message)s"))
        setattr(h, _HANDLER_TAG, True)
        root.addHandler(h)
    return path


@contextlib.contextmanager
def restored_root_logger() -> Iterator[None]:
    """Run the body (an in-process run that calls :func:`setup_logger`), then close the handlers
    it added to the root logger and restore the root's handlers and level."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in saved_handlers]:
            root.removeHandler(handler)
            handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
