"""``tools/<name>.py`` loaded as a module, so a test runs its ``main(argv)`` in-process."""
import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool(name: str, module_name: str = ""):
    """``tools/<name>.py`` imported as a fresh module (named ``module_name`` or
    ``<name>_tool``)."""
    spec = importlib.util.spec_from_file_location(module_name or f"{name}_tool",
                                                  os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
