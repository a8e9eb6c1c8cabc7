"""Where a command writes: an output that is a folder where a file goes, a file where a folder
goes, the dataset's own folder or the dataset root is refused, naming the path, before anything
is written (and nothing of the user's is touched)."""
import os

import pytest
import torch

from dassl_lite.errors import DasslLiteError
from dassl_lite.utils.io import atomic_write_text

from .conftest import load_tool, run_main, tiny_argv

convert_checkpoint = load_tool("convert_checkpoint")


def tree(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, files in os.walk(folder) for f in files)


def test_atomic_write_to_a_folder_or_below_a_file_names_it(tmp_path):
    folder = tmp_path / "results.json"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(DasslLiteError, match=f"Cannot write {folder}: it is a folder"):
        atomic_write_text(str(folder), "{}")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DasslLiteError, match=f"{tmp_path / 'afile'} is a file, not a folder"):
        atomic_write_text(str(tmp_path / "afile" / "sub" / "out.txt"), "{}")
    assert tree(tmp_path) == ["afile", "results.json/keep.txt"]
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("where", ["dataset root", "dataset folder", "inside it", "symlink"])
def test_train_output_dir_in_the_dataset_is_refused(where, fresh_root, tmp_path):
    before = tree(fresh_root)
    folder = fresh_root / "tiny_colors"
    if where == "symlink":
        (tmp_path / "lnk").symlink_to(folder)
    out = {"dataset root": fresh_root, "dataset folder": folder, "inside it": folder / "run",
           "symlink": tmp_path / "lnk"}[where]
    r = run_main(tiny_argv(fresh_root, out))
    assert r.code == 2
    assert f"--output-dir {out} " in r.err and "(nothing was written)" in r.err
    words = "is the dataset root" if where == "dataset root" else \
        f"lies in TinyColors's dataset folder {folder}"
    assert words in r.err
    assert tree(fresh_root) == before


def test_train_output_dir_that_is_a_file_is_refused(fresh_root, tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    r = run_main(tiny_argv(fresh_root, afile))
    assert r.code == 2 and f"--output-dir {afile} is a file" in r.err
    assert afile.read_text() == "mine"


def test_train_output_dir_beside_the_dataset_under_the_root_is_fine(fresh_root):
    r = run_main(tiny_argv(fresh_root, fresh_root / "runs" / "a"))
    assert r.code == 0, r.err
    assert (fresh_root / "runs" / "a" / "results.json").is_file()


def test_convert_checkpoint_folder_input_or_output_is_named(tmp_path, capsys):
    ck = tmp_path / "ck.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}}, ck)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert convert_checkpoint.main([str(ck), str(out), "--trust", "--force"]) == 2
    assert f"error: Cannot write {out}: it is a folder" in capsys.readouterr().err
    assert tree(out) == ["keep.txt"]
    assert convert_checkpoint.main([str(out), str(tmp_path / "new.pth"), "--trust"]) == 2
    assert f"error: {out} is a folder; expected a checkpoint file" in capsys.readouterr().err
    assert not (tmp_path / "new.pth").exists()


@pytest.mark.parametrize("text, words", [
    ("0\n", "must hold a mapping; got int"), ("false\n", "must hold a mapping; got bool"),
    ("''\n", "must hold a mapping; got str")])
def test_a_config_file_holding_a_falsy_scalar_is_refused(text, words, fresh_root, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    out = tmp_path / "out"
    r = run_main(tiny_argv(fresh_root, out, "--config-file", bad))
    assert r.code == 2 and f"Config file '{bad}' {words}" in r.err
    assert not out.exists()


def test_an_empty_config_file_is_named_in_a_warning(tmp_path, caplog):
    from dassl_lite.config import get_cfg_default, merge_from_file

    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    cfg = get_cfg_default()
    before = cfg.dump()
    merge_from_file(cfg, str(empty))
    assert cfg.dump() == before
    assert f"Config file '{empty}' is empty (or only comments); nothing merged" in caplog.text


def test_plot_never_replaces_an_input_summary_and_names_a_file_as_out(tmp_path, capsys):
    import json

    from tests.test_plots import COOP

    plot = load_tool("plot")
    summary = tmp_path / "fewshot_average.svg"  # a summary saved under the figure's name
    summary.write_text(json.dumps(COOP))
    assert plot.main(["fewshot", str(summary), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"Cannot write {summary}: it is the input {summary}" in err
    assert json.loads(summary.read_text()) == COOP
    assert not (tmp_path / "fewshot_average.png").exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert plot.main(["fewshot", str(summary), "--out", str(afile)]) == 2
    assert f"{afile} is a file, not a folder" in capsys.readouterr().err
    assert afile.read_text() == "x"

