"""Ctrl-C during training: stop at the next safe point instead of wherever the signal lands.

Inside :func:`stop_on_interrupt` the first SIGINT only sets a flag; the loop calls
:func:`check_interrupt` after each optimisation step and at each epoch end, which raises
:class:`TrainingInterrupted` there, so no step or checkpoint write is cut in half. A second
Ctrl-C raises ``KeyboardInterrupt`` at once (checkpoint writes are atomic even then).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped at a safe point after Ctrl-C (SIGINT)."""


class _State:
    requested = False


def _handler(signum, frame) -> None:
    if _State.requested:
        raise KeyboardInterrupt
    _State.requested = True
    # no logging here: a signal handler may run while a logging lock is held
    os.write(2, b"\nInterrupt received: stopping after the current step "
                b"(Ctrl-C again to stop at once)\n")


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[None]:
    """Turn the first SIGINT into a stop request for the duration of the block."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.getsignal(signal.SIGINT)
    _State.requested = False
    signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _State.requested = False


def interrupt_requested() -> bool:
    """True once Ctrl-C was pressed inside :func:`stop_on_interrupt`."""
    return _State.requested


def check_interrupt() -> None:
    """A safe point: raise :class:`TrainingInterrupted` if Ctrl-C was pressed."""
    if _State.requested:
        raise TrainingInterrupted("training interrupted (SIGINT)")
