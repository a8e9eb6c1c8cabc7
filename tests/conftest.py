"""Shared fixtures: the tiny user plug-in (trainer + dataset) and configs built from it."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
TINY_WORLD = os.path.join(FIXTURES, "tiny_world.py")


@pytest.fixture(scope="session")
def tiny_world():
    """The plug-in module, imported once the way ``--import`` does it."""
    from dassl_lite.cli import import_user_module

    import_user_module(TINY_WORLD)
    return sys.modules["dassl_lite_user_tiny_world"]


@pytest.fixture(scope="session")
def tiny_root(tiny_world, tmp_path_factory):
    """A dataset root holding TinyColors (4 classes, 6/2/4 images per class)."""
    root = tmp_path_factory.mktemp("tiny_data")
    tiny_world.make_tiny_colors(str(root))
    return str(root)


@pytest.fixture
def make_cfg(tiny_world, tiny_root, tmp_path):
    """``make_cfg(KEY, VALUE, ...)``: the tiny dataset + TinyNet config, merged like train.py."""
    from dassl_lite.cli import build_parser, setup_cfg

    def _make(*opts, output_dir=None):
        args = build_parser().parse_args([
            "--trainer", "TinyNet", "--root", tiny_root, "--seed", "1",
            "--dataset-config-file", os.path.join(FIXTURES, "tiny_dataset.yaml"),
            "--config-file", os.path.join(FIXTURES, "tiny_trainer.yaml"),
            "--output-dir", str(output_dir or tmp_path / "out"), *opts,
        ])
        return setup_cfg(args)

    return _make
