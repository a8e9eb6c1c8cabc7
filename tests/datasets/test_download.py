"""Published split files are downloaded with gdown when missing; offline, the split is built."""
import json
import os
import shutil
import sys

import pytest

from dassl_lite.data import DatasetLayoutError
from datasets.benchmark import DownloadError, download_from_gdrive
from tests.datasets.miniatures import make_dtd

DTD_ID = "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"


def fake_download(content, calls):
    def download(id=None, output=None, **kwargs):
        calls.append(dict(kwargs, id=id))
        with open(output, "w") as f:
            f.write(content)
        return output

    return download


def test_downloaded_split_file_is_read(tmp_path, load, monkeypatch, caplog):
    make_dtd(str(tmp_path / "a"))
    published = load("DescribableTextures", tmp_path / "a")
    content = (tmp_path / "a" / "dtd" / "split_zhou_DescribableTextures.json").read_text()
    make_dtd(str(tmp_path / "b"))
    calls = []
    monkeypatch.setattr("gdown.download", fake_download(content, calls))
    caplog.set_level("INFO")
    caplog.clear()
    ds = load("DescribableTextures", tmp_path / "b")
    path = tmp_path / "b" / "dtd" / "split_zhou_DescribableTextures.json"
    assert f"Reading split from {path}" in caplog.text and "building" not in caplog.text
    assert [c["id"] for c in calls] == [DTD_ID] and calls[0]["quiet"] is True
    assert [d.impath.replace("/b/", "/a/") for d in ds.train_x] == [d.impath for d in published.train_x]


def test_offline_builds_from_raw_annotations_with_a_warning(tmp_path, load, caplog):
    make_dtd(str(tmp_path))
    ds = load("DescribableTextures", tmp_path)
    path = tmp_path / "dtd" / "split_zhou_DescribableTextures.json"
    assert path.is_file() and ds.num_classes == 47
    assert (
        "DescribableTextures: building split_zhou_DescribableTextures.json from raw annotations "
        "(seed 1), which differs from the published split that papers report on, because could "
        "not download split_zhou_DescribableTextures.json from "
        f"https://drive.google.com/file/d/{DTD_ID}/view (ConnectionError: Failed to resolve "
        f"'drive.google.com' (no network in tests)); download it by hand and put it at {path}"
    ) in caplog.text


def test_non_json_download_is_discarded(tmp_path, load, monkeypatch, caplog):
    make_dtd(str(tmp_path))
    monkeypatch.setattr("gdown.download", fake_download("<html>Quota exceeded</html>", []))
    ds = load("DescribableTextures", tmp_path)  # built from the folders instead
    assert "(JSONDecodeError: Expecting value: line 1 column 1 (char 0))" in caplog.text
    assert ds.num_classes == 47
    assert not [n for n in os.listdir(tmp_path / "dtd") if n.endswith(".part")]


def test_download_helper_without_gdown(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)
    dest = tmp_path / "classnames.txt"
    with pytest.raises(DownloadError) as info:
        download_from_gdrive("abc", str(dest))
    assert str(info.value) == (
        "could not download classnames.txt from https://drive.google.com/file/d/abc/view (gdown is "
        f"not installed: pip install gdown); download it by hand and put it at {dest}")


def test_download_helper_success(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("gdown.download", fake_download('{"train": []}', calls))
    dest = tmp_path / "sub" / "split.json"
    assert download_from_gdrive("xyz", str(dest), timeout=3.0) == str(dest)
    assert json.loads(dest.read_text()) == {"train": []}
    assert calls == [{"id": "xyz", "quiet": True, "timeout": 3.0}]
    assert os.listdir(tmp_path / "sub") == ["split.json"]


def test_no_download_for_datasets_without_published_split(tmp_path, load, gdown_calls):
    from tests.datasets.miniatures import make_cub200

    make_cub200(str(tmp_path))
    shutil.rmtree(tmp_path / "CUB_200_2011" / "images" / "200.Common_Yellowthroat")
    os.remove(tmp_path / "CUB_200_2011" / "classes.txt")
    with pytest.raises(DatasetLayoutError) as info:
        load("CUB200", tmp_path)
    assert ("CUB200 has no published split file to download; it cannot be built from raw "
            f"annotations either, missing: {tmp_path}/CUB_200_2011/classes.txt") in str(info.value)
    assert gdown_calls == []
