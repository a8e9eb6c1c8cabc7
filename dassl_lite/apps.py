"""The application folders (``trainers/``, ``datasets/``, ``configs/``, ``tools/``) as parts of
the ``dassl_lite`` package, under one module name each.

In a checkout these folders sit beside ``dassl_lite/`` and the tools import them as top-level
packages (``import trainers``), the way upstream CoOp does. An installed wheel maps them into the
package (``dassl_lite.trainers``, ``dassl_lite.datasets``, ...; see ``setup.py``), so nothing
named ``datasets`` lands at the top of site-packages. Both names may meet in one process (a
checkout with an editable install, user code importing ``dassl_lite.trainers`` beside
``tools/train.py``); :class:`TwinFinder` then hands out the module already loaded under the other
name when both names point at the same file, so every trainer and dataset registers once.
``dassl_lite.trainers`` also works in a plain checkout (it is loaded from the folder beside
``dassl_lite/``).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Optional

PACKAGE = __name__.rpartition(".")[0]  # "dassl_lite"
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
APP_FOLDERS = ("trainers", "datasets", "configs", "tools")


def app_dir(name: str) -> str:
    """The folder of application folder ``name``: inside the installed package, else beside
    ``dassl_lite/`` in a checkout. Raises FileNotFoundError naming both places tried."""
    tried = [os.path.join(PACKAGE_DIR, name), os.path.join(os.path.dirname(PACKAGE_DIR), name)]
    for path in tried:
        if os.path.isdir(path):
            return path
    raise FileNotFoundError(f"dassl_lite's {name!r} folder is in neither {tried[0]} (installed) "
                            f"nor {tried[1]} (checkout); reinstall the package")


def configs_dir() -> str:
    """Where ``datasets/*.yaml`` and ``trainers/<TRAINER>/*.yaml`` live."""
    return app_dir("configs")


def load_builtins() -> None:
    """Import the built-in trainers and datasets (registering them), installed or in a checkout."""
    for name in ("trainers", "datasets"):
        importlib.import_module(f"{PACKAGE}.{name}")


def _twin(fullname: str) -> Optional[str]:
    """``dassl_lite.trainers.coop`` <-> ``trainers.coop`` for the application packages."""
    head, _, _ = fullname.partition(".")
    if head in APP_FOLDERS:
        return f"{PACKAGE}.{fullname}"
    prefix = PACKAGE + "."
    if fullname.startswith(prefix) and fullname[len(prefix):].partition(".")[0] in APP_FOLDERS:
        return fullname[len(prefix):]
    return None


def _real(path: Optional[str]) -> Optional[str]:
    return os.path.realpath(path) if path else None


def _checkout_spec(fullname: str) -> Optional[importlib.machinery.ModuleSpec]:
    """``dassl_lite.<app>`` from the checkout folder beside ``dassl_lite/`` (not installed)."""
    name = fullname[len(PACKAGE) + 1:]
    folder = os.path.join(os.path.dirname(PACKAGE_DIR), name)
    init = os.path.join(folder, "__init__.py")
    if os.path.isdir(os.path.join(PACKAGE_DIR, name)) or not os.path.isdir(folder):
        return None  # installed (the normal finders load it) or absent
    if os.path.isfile(init):
        return importlib.util.spec_from_file_location(fullname, init,
                                                      submodule_search_locations=[folder])
    spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)  # data-only folder
    spec.submodule_search_locations = [folder]
    return spec


def _located(fullname: str, path) -> Optional[str]:
    """The file the normal finders (or the checkout fallback) would load ``fullname`` from."""
    spec = importlib.machinery.PathFinder.find_spec(fullname, path)
    if spec is None and "." in fullname and fullname.count(".") == 1:
        spec = _checkout_spec(fullname)
    return spec.origin if spec is not None else None


class _AliasLoader(importlib.abc.Loader):
    """Returns a module that is already loaded (under its twin name)."""

    def __init__(self, module: ModuleType):
        self.module = module

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):  # already executed under its twin name
        return None


class TwinFinder(importlib.abc.MetaPathFinder):
    """Meta-path finder making ``trainers.x`` and ``dassl_lite.trainers.x`` one module."""

    def find_spec(self, fullname, path=None, target=None):
        twin = _twin(fullname)
        if twin is None:
            return None
        loaded = sys.modules.get(twin)
        if loaded is not None and self._same_file(fullname, path, loaded):
            spec = importlib.machinery.ModuleSpec(fullname, _AliasLoader(loaded),
                                                  origin=getattr(loaded, "__file__", None),
                                                  is_package=hasattr(loaded, "__path__"))
            return spec
        if fullname.startswith(PACKAGE + ".") and fullname.count(".") == 1:
            return _checkout_spec(fullname)
        return None

    @staticmethod
    def _same_file(fullname: str, path, loaded: ModuleType) -> bool:
        parent, _, _ = fullname.rpartition(".")
        twin_parent = _twin(fullname).rpartition(".")[0]
        if parent and twin_parent and parent in sys.modules and twin_parent in sys.modules:
            return sys.modules[parent] is sys.modules[twin_parent]  # submodule of aliased package
        loaded_file = getattr(loaded, "__file__", None)
        if loaded_file is None:  # data-only namespace package: compare folders
            here = _located(fullname, path)
            return bool(here) and _real(here) in map(_real, list(getattr(loaded, "__path__", [])))
        return _real(_located(fullname, path)) == _real(loaded_file)


def install() -> None:
    """Put :class:`TwinFinder` first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, TwinFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, TwinFinder())
