"""Datum: one labelled image record."""
from __future__ import annotations

import operator
import os
from typing import Tuple, Union


class Datum:
    """An image path with its class label, domain label and class name.

    Unlike Dassl's ``Datum`` it does not check that the file exists: building an index of a
    large dataset stays fast and tests need no real files. The image is checked when read
    (:class:`~dassl_lite.data.DatasetWrapper` raises :class:`~dassl_lite.data.ImageReadError`).
    Records are immutable, comparable and hashable.
    """

    __slots__ = ("_impath", "_label", "_domain", "_classname")

    def __init__(
        self,
        impath: Union[str, os.PathLike] = "",
        label: int = 0,
        domain: int = 0,
        classname: str = "",
    ) -> None:
        if not isinstance(impath, (str, os.PathLike)):
            raise TypeError(f"Datum impath must be a str or path; got {type(impath).__name__}")
        if not isinstance(classname, str):
            raise TypeError(f"Datum classname must be a str; got {type(classname).__name__}")
        self._impath = os.fspath(impath)
        self._label = operator.index(label)  # ints and numpy ints; floats raise TypeError
        self._domain = operator.index(domain)
        self._classname = classname

    @property
    def impath(self) -> str:
        return self._impath

    @property
    def label(self) -> int:
        return self._label

    @property
    def domain(self) -> int:
        return self._domain

    @property
    def classname(self) -> str:
        return self._classname

    def _key(self) -> Tuple[str, int, int, str]:
        return (self._impath, self._label, self._domain, self._classname)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Datum):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Datum(impath={self._impath!r}, label={self._label}, domain={self._domain}, "
            f"classname={self._classname!r})"
        )

    def __getstate__(self) -> Tuple[str, int, int, str]:
        return self._key()

    def __setstate__(self, state: Tuple[str, int, int, str]) -> None:
        self._impath, self._label, self._domain, self._classname = state
