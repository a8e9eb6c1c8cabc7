"""Error types for problems a user can fix (bad names, keys, layouts, checkpoints).

Tools catch :class:`DasslLiteError` and print its message without a traceback; anything else
is a bug and keeps its traceback.
"""


class DasslLiteError(Exception):
    """Base class of errors caused by user input; the message says what to do."""


class RegistryKeyError(DasslLiteError, KeyError):
    """A name that is not in a registry (or registered twice)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
