"""Errors about data a user can fix: a dataset folder laid out wrongly, an unreadable image."""
from __future__ import annotations

from ..errors import DasslLiteError
from ..utils.image import ImageReadError  # noqa: F401 (its home is utils; importable from here)


class DatasetLayoutError(DasslLiteError, FileNotFoundError):
    """A dataset folder, split file or split that is missing, empty or inconsistent.

    The message names the path tried, the expected layout and where the instructions are.
    """

    def __str__(self) -> str:  # a single message, not OSError's "[Errno ...]" form
        return str(self.args[0]) if self.args else ""


class SplitFileError(DasslLiteError, ValueError):
    """A split file (``split_zhou_<Name>.json``) that is empty, not JSON or not in the upstream
    format; the message names the file and the entry."""
