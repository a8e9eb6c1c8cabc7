"""Loading ``.pth`` files without running code from them.

Every file is read with ``torch.load(weights_only=True)``: tensors and plain containers only. A
checkpoint written by upstream Dassl (CoOp, CoCoOp, MaPLe, ...) holds one kind of object beyond
that: Dassl's warmup schedulers do not override ``state_dict()``, so their saved ``scheduler``
entry carries the wrapped torch scheduler object (``successor``), which in turn holds its
optimizer. Those few classes (:data:`UPSTREAM_GLOBALS`) are allowed, plus what a NumPy array
needs (our own files from before RNG states became tensors), and nothing else; scheduler and
optimizer objects become plain state dicts, arrays tensors, right after loading. A file that needs any other
global is refused by name, with the command that converts a trusted file.
"""
from __future__ import annotations

import collections
import pickle
from typing import Any, List, Type

import torch
from torch.optim import lr_scheduler as torch_sched

from ..errors import DasslLiteError, load_error_reason
from ..errors import first_error_line as _first_line

# What an upstream Dassl checkpoint with a scheduler object references, beyond plain data:
# the torch scheduler Dassl builds (single_step, multi_step, cosine), the torch optimizer it
# holds (Dassl's sgd, adam/amsgrad, adamw, rmsprop) and ``dict``, the factory of the optimizer's
# ``defaultdict(dict)`` state (``collections.defaultdict`` itself is read as a plain dict).
UPSTREAM_GLOBALS = (
    torch_sched.StepLR,
    torch_sched.MultiStepLR,
    torch_sched.CosineAnnealingLR,
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.RMSprop,
    dict,
)


def _numpy_globals() -> list:
    """What a pickled NumPy array or scalar needs (dassl_lite checkpoints written before RNG
    states became tensors hold NumPy's RNG state as an array). Arrays are rebuilt from data the
    restricted unpickler already checked; they become tensors right after loading."""
    import numpy as np

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    dtypes = [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64, np.float32)]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtypes]


def _defaultdict_as_dict(default_factory: Any = None) -> dict:
    """Stands in for ``collections.defaultdict`` (an optimizer's ``state``) while unpickling:
    torch's restricted unpickler fills only plain dicts, and a loaded optimizer needs no default."""
    return {}


# (object, the global name it answers to in a pickle)
_ALLOWED = [*UPSTREAM_GLOBALS, *_numpy_globals(),
            (_defaultdict_as_dict, "collections.defaultdict")]

CONVERT_HINT = ("If you trust the file, convert it once with "
                "`python tools/convert_checkpoint.py --trust {path} NEW_FILE` and use NEW_FILE")


class UnsafeCheckpointError(DasslLiteError):
    """A file that would need code or classes outside the allow-list to load."""


def global_name(obj: Any) -> str:
    """``module.qualname`` of a class or function, as a pickle names it."""
    return f"{obj.__module__}.{obj.__qualname__}"


def _unsafe_globals(path: str) -> List[str]:
    """The globals the pickle in ``path`` references beyond torch's own safe set (not run)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip checkpoint (legacy format): no list to give
        return []


def safe_torch_load(path: str, what: str = "checkpoint",
                    error: Type[DasslLiteError] = DasslLiteError) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with :data:`UPSTREAM_GLOBALS` allowed.

    Raises :class:`UnsafeCheckpointError` naming the refused global(s), and
    ``error`` (a :class:`DasslLiteError`) for a file torch cannot read (naming the path and the
    reason).
    """
    try:
        with torch.serialization.safe_globals(_ALLOWED):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        allowed = {global_name(g) for g in [*UPSTREAM_GLOBALS, *_numpy_globals()]}
        allowed.add("collections.defaultdict")
        wanted = [g for g in _unsafe_globals(path) if g not in allowed]
        if wanted or "Unsupported global" in str(e) or "allowlisted" in str(e):
            names = (", ".join(wanted) if wanted
                     else f"a class outside the allow-list (torch says: {_first_line(e)})")
            raise UnsafeCheckpointError(
                f"Refusing to load {what} {path!r}: it needs {names}, which is not plain data "
                f"(tensors, numbers, strings, containers) nor an allowed upstream scheduler/"
                f"optimizer class, and loading it could run code. "
                + CONVERT_HINT.format(path=path)
            ) from None
        raise error(_unreadable(what, path, e)) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as e:
        raise error(_unreadable(what, path, e)) from None
    return to_plain(obj)


def _unreadable(what: str, path: str, e: BaseException) -> str:
    return f"Cannot read {what} {path!r}: not a file written by torch.save ({load_error_reason(e)})"


def to_plain(obj: Any) -> Any:
    """Replace scheduler and optimizer objects (upstream Dassl) by their state dicts, numpy
    arrays by tensors, recursively through dicts, lists and tuples."""
    if isinstance(obj, (torch_sched.LRScheduler, torch.optim.Optimizer)):
        return to_plain(obj.state_dict())
    if isinstance(obj, dict):
        plain = {k: to_plain(v) for k, v in obj.items()}
        return type(obj)(plain) if isinstance(obj, collections.OrderedDict) else plain
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    if type(obj).__module__ == "numpy" and hasattr(obj, "dtype") and hasattr(obj, "shape"):
        return torch.from_numpy(obj.copy()) if obj.shape else obj.item()
    return obj
