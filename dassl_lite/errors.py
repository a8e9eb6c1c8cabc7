"""Error types for problems a user can fix (bad names, keys, layouts, checkpoints).

Tools catch :class:`DasslLiteError` and print its message without a traceback; anything else
is a bug and keeps its traceback.
"""
import errno
import pickle
import re


class DasslLiteError(Exception):
    """Base class of errors caused by user input; the message says what to do."""


class RegistryKeyError(DasslLiteError, KeyError):
    """A name that is not in a registry (or registered twice)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def load_error_reason(e: BaseException) -> str:
    """Why ``torch.load`` (or ``pickle``) failed on a file, in words: a truncated or damaged file
    and a refused global say so."""
    text = first_error_line(e)
    if isinstance(e, EOFError) or "truncated" in text or "Ran out of input" in text:
        return "the file is empty or truncated"
    damaged_zip = isinstance(e, OSError) and e.errno == errno.EINVAL and not e.filename
    if damaged_zip:  # torch's zip reader on a file cut near its end
        return "the file is truncated or corrupt; torch: its zip archive cannot be read"
    if "PytorchStreamReader" in text:
        detail = text.split(". This is an internal")[0].replace("PytorchStreamReader failed ", "")
        return f"the file is truncated or corrupt; torch: {detail}"
    refused = re.search(r"GLOBAL ([\w.]+)", str(e))
    if refused:  # torch's weights-only unpickler met a class or function
        return (f"it needs {refused.group(1)}, which is not plain data (loading it could run "
                f"code)")
    if isinstance(e, (KeyError, pickle.UnpicklingError)):
        return "unrecognised content"
    return f"{type(e).__name__}: {text}"


def first_error_line(e: BaseException) -> str:
    """The line of an exception's message that says what was wrong (for torch's weights-only
    messages, the ``WeightsUnpickler error`` line)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error", 1)[1].strip(" :")
            return rest or (lines[i + 1] if i + 1 < len(lines) else line)
    return lines[0][:300] if lines else type(e).__name__
