"""``tools/<name>.py`` loaded as a module, so a test runs its ``main(argv)`` in-process."""
import contextlib
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool(name: str, module_name: str = ""):
    """``tools/<name>.py`` imported as a fresh module (named ``module_name`` or
    ``<name>_tool``)."""
    spec = importlib.util.spec_from_file_location(module_name or f"{name}_tool",
                                                  os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def registered_tool(name: str):
    """``tools/<name>.py`` imported as ``<name>_tool`` and kept in ``sys.modules`` while the
    block runs (dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(f"{name}_tool",
                                                  os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]
