"""Writing the toy world to disk: layout, split files, idempotence, interruption, the CLI."""
import importlib.util
import json
import os
from pathlib import Path

import pytest

from datasets.toy_generator import CLASSNAMES
from datasets.toy_world import MARKER_FILE, SplitCounts, make_toy_world

SMALL = SplitCounts(train=2, val=1, test=1)
REPO = Path(__file__).resolve().parents[2]


def read_split(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def shapes_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    return root, make_toy_world(str(root), ["ToyShapes"], counts=SMALL, workers=1)


def test_layout_and_split_file(shapes_world):
    root, paths = shapes_world
    assert paths == {"ToyShapes": str(root / "toy_shapes")}
    folder = root / "toy_shapes"
    assert sorted(os.listdir(folder)) == ["images", "split_zhou_ToyShapes.json", MARKER_FILE]
    split = read_split(folder / "split_zhou_ToyShapes.json")
    assert {k: len(v) for k, v in split.items()} == {"train": 128, "val": 64, "test": 64}
    assert split["train"][:2] == [["red_circle/0000.png", 0, "red circle"],
                                  ["red_circle/0001.png", 0, "red circle"]]
    assert split["val"][0] == ["red_circle/0002.png", 0, "red circle"]
    assert split["test"][-1] == ["brown_moon/0003.png", 63, "brown moon"]
    entries = [e for items in split.values() for e in items]
    assert {e[2] for e in entries} == set(CLASSNAMES)
    assert all(CLASSNAMES[label] == name for _, label, name in entries)
    assert all((folder / "images" / relpath).is_file() for relpath, _, _ in entries)
    assert len(list((folder / "images").rglob("*.png"))) == 256
    assert not [p for p in os.listdir(root) if p.startswith(".")], "temporary folder left behind"


def test_same_seed_same_bytes_other_seed_other_bytes(shapes_world, tmp_path):
    root, _ = shapes_world
    make_toy_world(str(tmp_path / "a"), ["ToyShapes"], counts=SMALL, workers=2)
    make_toy_world(str(tmp_path / "b"), ["ToyShapes"], seed=1, counts=SMALL, workers=1)
    for rel in ("split_zhou_ToyShapes.json", "images/red_circle/0000.png", "images/pink_heart/0003.png"):
        ours = (root / "toy_shapes" / rel).read_bytes()
        assert (tmp_path / "a" / "toy_shapes" / rel).read_bytes() == ours
        assert ((tmp_path / "b" / "toy_shapes" / rel).read_bytes() == ours) == rel.endswith(".json")


def test_idempotent_and_regenerates_when_needed(tmp_path, caplog):
    split = tmp_path / "toy_shapes" / "split_zhou_ToyShapes.json"
    make_toy_world(str(tmp_path), ["ToyShapes"], counts=SMALL, workers=1)
    before = split.stat().st_mtime_ns
    caplog.set_level("INFO", logger="datasets.toy_world")
    make_toy_world(str(tmp_path), ["ToyShapes"], counts=SMALL, workers=1)
    assert split.stat().st_mtime_ns == before
    assert "Toy dataset ToyShapes is up to date in" in caplog.text

    split.unlink()  # as if generation had been interrupted before the split file was written
    make_toy_world(str(tmp_path), ["ToyShapes"], counts=SMALL, workers=1)
    assert len(read_split(split)["train"]) == 128

    make_toy_world(str(tmp_path), ["ToyShapes"], counts=SplitCounts(1, 1, 1), workers=1)
    assert len(read_split(split)["train"]) == 64
    assert "Replacing" in caplog.text
    assert len(list((tmp_path / "toy_shapes" / "images").rglob("*.png"))) == 192


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "toy_textures").mkdir()
    with pytest.raises(FileExistsError, match="toy_textures exists but is not a toy world folder "
                                              r"\(no toy_world.json\); move it away or pass force"):
        make_toy_world(str(tmp_path), ["ToyTextures"], counts=SMALL, workers=1)
    make_toy_world(str(tmp_path), ["ToyTextures"], counts=SMALL, force=True, workers=1)
    assert (tmp_path / "toy_textures" / "split_zhou_ToyTextures.json").is_file()


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"toy dataset names must be among ToyShapes, "
                                         r"ToyTextures, ToySketch; got \['ToyShape'\]"):
        make_toy_world(str(tmp_path), ["ToyShape"])
    with pytest.raises(ValueError, match="need train >= 1"):
        make_toy_world(str(tmp_path), counts=SplitCounts(0, 1, 1))


def test_command_line_tool(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_toy_data", REPO / "tools" / "make_toy_data.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(["--root", str(tmp_path), "--counts", "1", "1", "1", "--workers", "2",
               "--contact-sheet", str(tmp_path / "sheet.png")])
    out = capsys.readouterr().out
    for name, folder in (("ToyShapes", "toy_shapes"), ("ToyTextures", "toy_textures"),
                         ("ToySketch", "toy_sketch")):
        assert f"{name:12s} {tmp_path / folder}  " in out
        counts = {k: len(v) for k, v in read_split(tmp_path / folder / f"split_zhou_{name}.json").items()}
        assert counts == {"train": 64, "val": 64, "test": 64}
    assert (tmp_path / "sheet.png").is_file()
