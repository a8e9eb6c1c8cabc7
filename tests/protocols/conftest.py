"""Run the protocol tools in-process on the tiny plug-in world (TinyNet x TinyColors)."""
import os
import types

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
TINY_TRAINER = os.path.join(FIXTURES, "tiny_trainer.yaml")  # 3 epochs


@pytest.fixture
def tool(tiny_world, tiny_root, tmp_path, capsys):
    """``tool(protocol, *flags)`` runs ``tools/<protocol>.py`` in-process (jobs too) on TinyNet
    and TinyColors into ``tmp_path/out``; returns (exit code, stdout, stderr)."""
    from dassl_lite.protocols.cli import main

    out = tmp_path / "out"

    def run(protocol, *flags, launcher="inprocess", trainer_cfg=TINY_TRAINER):
        argv = ["--import", os.path.join(FIXTURES, "tiny_world.py"), "--trainer", "TinyNet",
                "--config-file", trainer_cfg, "--root", tiny_root, "--output-root", str(out),
                "--launcher", launcher, *flags]
        code = main(protocol, argv, repo_root=REPO)
        captured = capsys.readouterr()
        return types.SimpleNamespace(code=code, out=captured.out, err=captured.err)

    run.out = out
    return run
