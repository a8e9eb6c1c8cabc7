"""In-process runs of ``tools/train.py``'s main (no subprocess per case)."""
import contextlib
import io
import os
import shutil
from dataclasses import dataclass

import pytest

from tests import tool_modules

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(REPO, "tests", "fixtures")


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_main(argv) -> Result:
    """``dassl_lite.cli.main(argv)`` with stdout/stderr captured and the root logger restored."""
    import datasets  # noqa: F401  (registers the datasets, as tools/train.py does)
    import trainers  # noqa: F401
    from dassl_lite.cli import main
    from dassl_lite.utils.logger import restored_root_logger

    out, err = io.StringIO(), io.StringIO()
    with restored_root_logger(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse
            code = e.code
    return Result(code, out.getvalue(), err.getvalue())


def tiny_argv(root, out, *extra, trainer="TinyNet"):
    """TinyNet on TinyColors, as in tests/tools/test_train_cli.py."""
    return ["--import", os.path.join(FIX, "tiny_world.py"), "--trainer", trainer,
            "--root", str(root), "--output-dir", str(out), "--seed", "1",
            "--dataset-config-file", os.path.join(FIX, "tiny_dataset.yaml"),
            "--config-file", os.path.join(FIX, "tiny_trainer.yaml"), *extra]


@pytest.fixture
def fresh_root(tiny_root, tmp_path):
    """A private copy of the TinyColors root, free to damage."""
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    return root


def load_tool(name):
    """``tools/<name>.py`` imported as a module (its ``main(argv)`` runs in-process)."""
    return tool_modules.load_tool(name, f"{name}_tool_cli")
