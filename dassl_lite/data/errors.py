"""Errors about data a user can fix: a dataset folder laid out wrongly, an unreadable image."""
from __future__ import annotations

from ..errors import DasslLiteError


class DatasetLayoutError(DasslLiteError, FileNotFoundError):
    """A dataset folder, split file or split that is missing, empty or inconsistent.

    The message names the path tried, the expected layout and where the instructions are.
    """

    def __str__(self) -> str:  # a single message, not OSError's "[Errno ...]" form
        return str(self.args[0]) if self.args else ""


class ImageReadError(DasslLiteError, OSError):
    """An image that cannot be opened or decoded; ``filename`` is its path.

    Built from one message so that a DataLoader worker can re-raise it in the main process.
    """

    def __init__(self, message: str, filename: str = "") -> None:
        super().__init__(message)
        self.filename = filename

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):
        return type(self), (str(self), self.filename)


class SplitFileError(DasslLiteError, ValueError):
    """A split file (``split_zhou_<Name>.json``) that is empty, not JSON or not in the upstream
    format; the message names the file and the entry."""
