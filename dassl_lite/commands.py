"""Console commands (``dassl-train``, ``dassl-base2new``, ...): each runs a ``tools/<name>.py``.

The tools are the single implementation: ``python tools/train.py`` in a checkout and
``dassl-train`` after ``pip install`` run the same file (an installed package carries
``tools/`` as ``dassl_lite/tools/``, see ``setup.py``). A tool is run as ``__main__`` with
``__file__`` set to its path, exactly as ``python tools/NAME.py`` would, so its relative
lookups (``configs/`` beside ``tools/``, ``tools/train.py`` for protocol jobs) work from any
directory; ``sys.argv[0]`` is the command's name, so usage lines read ``dassl-NAME``.

Installed, the tools' ``sys.path.insert(0, <package dir>)`` would put every folder of the package
(``clip``, ``utils``, ``datasets``...) at the top of the import path; :func:`run_tool` appends
that folder to ``sys.path`` itself first (so the tool skips its insertion) and imports the
built-in trainers and datasets, so ``import datasets`` in a tool is ``dassl_lite.datasets``
for that process only (nothing named ``datasets`` is installed at the top of site-packages).

Adding a command for a new tool is one line in ``pyproject.toml``'s ``[project.scripts]``
(``dassl-NAME = "dassl_lite.commands:NAME"``) plus, here, ``NAME = tool_command("NAME")``.
"""
from __future__ import annotations

import builtins
import os
import sys
import types
from typing import Callable, Optional, Sequence

from .apps import PACKAGE, PACKAGE_DIR, app_dir, load_builtins


def tool_path(name: str) -> str:
    """Path of ``tools/<name>.py`` (installed or in a checkout); a clear error if absent."""
    path = os.path.join(app_dir("tools"), f"{name}.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No tool {name!r}: {path} does not exist (this version of "
                                f"dassl_lite has no tools/{name}.py)")
    return path


def run_tool(name: str, argv: Optional[Sequence[str]] = None) -> int:
    """Run ``tools/<name>.py`` as its own ``__main__`` with ``argv`` (default: the command
    line's arguments); returns its exit status."""
    try:
        path = tool_path(name)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if os.path.dirname(os.path.dirname(path)) == PACKAGE_DIR:
        _prepare_installed_tool()
    args = list(sys.argv[1:] if argv is None else argv)
    saved = sys.argv
    command = os.path.basename(saved[0]) if saved else ""
    sys.argv = [command if command.startswith("dassl-") else path, *args]  # usage: dassl-NAME
    try:
        _exec_as_main(path)
    except SystemExit as e:
        return _exit_status(e.code)
    finally:
        sys.argv = saved
    return 0


def _exec_as_main(path: str) -> None:
    """Run the file at ``path`` as ``__main__`` (like ``runpy.run_path``, which would also
    set ``sys.argv[0]`` to the file name)."""
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=path, __builtins__=builtins, __package__=None, __spec__=None)
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec")
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        exec(code, main.__dict__)
    finally:
        sys.modules["__main__"] = saved


def _prepare_installed_tool() -> None:
    """Let an installed tool's ``import trainers`` / ``import datasets`` find the package's."""
    if PACKAGE_DIR not in sys.path:
        sys.path.append(PACKAGE_DIR)  # at the end: the tool sees it there and adds nothing
    load_builtins()
    for name in ("trainers", "datasets"):
        sys.modules.setdefault(name, sys.modules[f"{PACKAGE}.{name}"])


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints the message, status 1
    return 1


def tool_command(name: str) -> Callable[[], int]:
    """A console-script entry point running ``tools/<name>.py``."""

    def command() -> int:
        return run_tool(name)

    command.__name__ = name
    command.__doc__ = f"Run tools/{name}.py with the command line's arguments."
    return command


train = tool_command("train")
base2new = tool_command("base2new")
fewshot = tool_command("fewshot")
crossdataset = tool_command("crossdataset")
parse_results = tool_command("parse_test_res")
plot = tool_command("plot")
anomaly = tool_command("anomaly")
predict = tool_command("predict")
