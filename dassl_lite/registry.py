"""A small typed registry: names to classes or functions.

Every pluggable piece of dassl_lite (trainers, datasets, samplers, transforms, optimizers,
lr schedulers, evaluators, config extenders) is looked up by name through one of the
registries defined at the bottom of this module.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Callable, Dict, Generic, Iterator, List, Optional, TypeVar

from .errors import RegistryKeyError

T = TypeVar("T")

__all__ = [
    "Registry",
    "TRAINER_REGISTRY",
    "DATASET_REGISTRY",
    "SAMPLER_REGISTRY",
    "TRANSFORM_REGISTRY",
    "OPTIMIZER_REGISTRY",
    "LR_SCHEDULER_REGISTRY",
    "EVALUATOR_REGISTRY",
    "CONFIG_EXTENDER_REGISTRY",
]


def closest_name(name: str, candidates: List[str]) -> Optional[str]:
    """The candidate most similar to ``name`` (case-insensitive), or None if none is close."""
    lowered = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _where(obj: object) -> str:
    """Where ``obj`` was defined, as ``module.qualname (file:line)`` when it can be found."""
    module = getattr(obj, "__module__", "?")
    qualname = getattr(obj, "__qualname__", repr(obj))
    try:
        path = inspect.getsourcefile(obj)  # type: ignore[arg-type]
        line = inspect.getsourcelines(obj)[1]  # type: ignore[arg-type]
        return f"{module}.{qualname} ({path}:{line})"
    except (TypeError, OSError):
        return f"{module}.{qualname}"


class Registry(Generic[T]):
    """Maps names to objects, filled with ``@REGISTRY.register()`` or ``REGISTRY.register(obj)``.

    >>> MODELS = Registry("MODEL")
    >>> @MODELS.register()
    ... class Net: ...
    >>> MODELS.get("Net") is Net
    True
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._obj_map: Dict[str, T] = {}

    @property
    def name(self) -> str:
        return self._name

    def _do_register(self, name: str, obj: T, force: bool) -> None:
        if name in self._obj_map and not force:
            first = self._obj_map[name]
            if first is obj:
                return
            raise RegistryKeyError(
                f"'{name}' is already registered in the {self._name} registry by "
                f"{_where(first)}; pass force=True to replace it, or choose another name"
            )
        self._obj_map[name] = obj

    def register(
        self, obj: Optional[T] = None, *, name: Optional[str] = None, force: bool = False
    ):
        """Register ``obj`` under ``name`` (default: its ``__name__``).

        Used as a decorator (``@R.register()``, ``@R.register(name="X")``) or a call (``R.register(f)``).
        """
        if obj is None:

            def deco(func_or_class: T) -> T:
                self._do_register(name or func_or_class.__name__, func_or_class, force)
                return func_or_class

            return deco
        self._do_register(name or obj.__name__, obj, force)  # type: ignore[attr-defined]
        return obj

    def get(self, name: str) -> T:
        """The object registered as ``name``; a miss names the closest entry and lists them all."""
        if name in self._obj_map:
            return self._obj_map[name]
        kind = self._name.lower()
        registered = ", ".join(self.names()) or "(none)"
        guess = closest_name(name, self.names())
        hint = f" Did you mean '{guess}'?" if guess else ""
        raise RegistryKeyError(
            f"No {kind} '{name}' in {self._name} registry.{hint} Registered: {registered}"
        )

    def names(self) -> List[str]:
        """Registered names, sorted case-insensitively."""
        return sorted(self._obj_map, key=lambda n: (n.lower(), n))

    def items(self):
        return [(n, self._obj_map[n]) for n in self.names()]

    def in_registration_order(self):
        """(name, object) pairs in the order they were registered (``items`` is sorted)."""
        return list(self._obj_map.items())

    def __contains__(self, name: object) -> bool:
        return name in self._obj_map

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._obj_map)

    def __repr__(self) -> str:
        return f"Registry(name={self._name!r}, names={self.names()})"


TRAINER_REGISTRY: Registry[Callable] = Registry("TRAINER")
DATASET_REGISTRY: Registry[Callable] = Registry("DATASET")
SAMPLER_REGISTRY: Registry[Callable] = Registry("SAMPLER")
TRANSFORM_REGISTRY: Registry[Callable] = Registry("TRANSFORM")
OPTIMIZER_REGISTRY: Registry[Callable] = Registry("OPTIMIZER")
LR_SCHEDULER_REGISTRY: Registry[Callable] = Registry("LR_SCHEDULER")
EVALUATOR_REGISTRY: Registry[Callable] = Registry("EVALUATOR")
CONFIG_EXTENDER_REGISTRY: Registry[Callable] = Registry("CONFIG_EXTENDER")
