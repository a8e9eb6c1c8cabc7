"""VTAB-1k: the prepared layout's readers (both modes, every bad input), the toy tasks, the configs."""
import hashlib
import io
import logging
import os
import struct

import numpy as np
import pytest
from PIL import Image

from dassl_lite.config import ConfigError, get_cfg_default, merge_from_file
from dassl_lite.config.validate import validate_cfg
from dassl_lite.data import DatasetLayoutError
from dassl_lite.registry import DATASET_REGISTRY
from datasets import toy_generator, toy_vtab, vtab
from datasets.vtab_tasks import (LIST_FILES, MODES, TOY_VTAB_TASKS, VTAB_TASKS, dataset_name)
from tests.datasets.conftest import make_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG = b"not read: the readers check that images exist, the loaders open them"


def write_task(root, task, labels=None, n_test=6, noah=False):
    """A miniature of ``vtab-1k/<task>``: train800 4 images, val200 2, train800val200 both, test
    n_test; labels cycle through ``labels`` (default 0..3). ``noah``: NOAH's release layout, each
    list's images in their own folder (``images/<list>/<i:06d>.jpg``, train800val200's are
    copies); else one ``images/<j>.png`` per image. Returns the task folder."""
    folder = os.path.join(root, "vtab-1k", task)
    labels = labels or [0, 1, 2, 3]
    items = [labels[j % len(labels)] for j in range(6 + n_test)]
    parts = {"train800": range(4), "val200": range(4, 6), "train800val200": range(6),
             "test": range(6, 6 + n_test)}
    for name in LIST_FILES:
        lines = []
        for i, j in enumerate(parts[name]):
            rel = f"images/{name}/{i:06d}.jpg" if noah else f"images/{j:03d}.png"
            os.makedirs(os.path.dirname(os.path.join(folder, rel)), exist_ok=True)
            with open(os.path.join(folder, rel), "wb") as f:
                f.write(PNG)
            lines.append(f"{rel} {items[j]}\n")
        with open(os.path.join(folder, f"{name}.txt"), "w") as f:
            f.writelines(lines)
    return folder


def load(task, root, *opts):
    cfg = make_cfg(dataset_name(task), root, *opts)
    return DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)


def test_contract_every_task_registered_with_its_classes_and_config():
    for task in list(VTAB_TASKS.values()) + list(TOY_VTAB_TASKS.values()):
        cls = DATASET_REGISTRY.get(dataset_name(task.name))
        assert cls.vtab_task == task and cls.__module__ == "datasets.vtab"
        assert len(vtab.classnames(task.name)) == task.num_classes
        cfg = get_cfg_default()
        merge_from_file(cfg, os.path.join(REPO, "configs", "datasets", f"vtab1k_{task.name}.yaml"))
        assert cfg.DATASET.NAME == dataset_name(task.name)
        assert cfg.INPUT.TEST_RESIZE == "squash"  # KMnP/vpt: no centre crop on any split
    assert vtab.classnames("eurosat")[9] == "SeaLake" and vtab.classnames("cifar")[1] == "aquarium fish"
    assert vtab.classnames("kitti") == ["class_0", "class_1", "class_2", "class_3"]
    assert tuple(MODES) == ("final", "tune")


@pytest.mark.parametrize("mode", ["final", "tune"])
def test_both_modes_read_their_lists(tmp_path, mode):
    folder = write_task(tmp_path, "eurosat", labels=[9, 2, 5])
    write_task(tmp_path, "sun397", labels=[0, 1], noah=True)  # lists that miss most classes
    data = load("eurosat", tmp_path, "DATASET.VTAB.MODE", mode)
    train_n, test_n = (6, 6) if mode == "final" else (4, 2)
    assert (len(data.train_x), len(data.val), len(data.test)) == (train_n, 0, test_n)
    first = data.test[0]
    expected_first = "images/006.png" if mode == "final" else "images/004.png"
    assert first.impath == os.path.join(folder, expected_first)
    assert [d.label for d in data.train_x[:4]] == [9, 2, 5, 9]
    assert data.train_x[0].classname == "SeaLake" and data.num_classes == 10
    sun = load("sun397", tmp_path, "DATASET.VTAB.MODE", mode)
    assert sun.num_classes == 397 and len(sun.classnames) == 397 and sun.classnames[5] == "class_5"
    in_folder = "train800val200/000005.jpg" if mode == "final" else "train800/000000.jpg"
    assert sun.train_x[-1 if mode == "final" else 0].impath.endswith(in_folder)


def rewrite(folder, name, edit):
    path = os.path.join(folder, f"{name}.txt")
    with open(path) as f:
        lines = f.readlines()
    with open(path, "w") as f:
        f.writelines(edit(lines))
    return path


BAD = {  # case -> (edit of the folder, the message's expected parts (format with folder))
    "missing list": (lambda d: os.remove(os.path.join(d, "val200.txt")),
                     ["list file val200.txt not found in {d}"]),
    "missing image": (lambda d: os.remove(os.path.join(d, "images", "001.png")),
                      ["line 2 of {d}/train800.txt: image {d}/images/001.png not found"]),
    "malformed line": (lambda d: rewrite(d, "train800", lambda ls: ls[:2] + ["images/002.png\n"] + ls[3:]),
                       ["line 3 of {d}/train800.txt should be '<relpath> <label>'", "got 'images/002.png'"]),
    "label not an integer": (lambda d: rewrite(d, "test", lambda ls: ["images/006.png dog\n"] + ls[1:]),
                             ["line 1 of {d}/test.txt should be", "an integer"]),
    "label out of range": (lambda d: rewrite(d, "val200", lambda ls: [ls[0], "images/005.png 10\n"]),
                           ["line 2 of {d}/val200.txt: label 10 is out of range for eurosat's "
                            "10 classes (0..9)"]),
    "train800/val200 overlap": (lambda d: rewrite(d, "val200", lambda ls: ["images/000.png 0\n"] + ls[1:]),
                                ["{d}/train800.txt and {d}/val200.txt share 1 image(s) "
                                 "(line 1: images/000.png of val200.txt)"]),
    "union lacks a line": (lambda d: rewrite(d, "train800val200", lambda ls: ls[:-1]),
                           ["{d}/train800val200.txt must list the images of train800.txt and then "
                            "val200.txt with their labels: 5 lines for 4 + 2"]),
    "union has another line": (lambda d: rewrite(d, "train800val200", lambda ls: ls + ["images/007.png 3\n"]),
                               ["7 lines for 4 + 2"]),
    "union with another label": (lambda d: rewrite(d, "train800val200", lambda ls: ls[:3] + ["images/003.png 0\n"] + ls[4:]),
                                 ["line 4 (images/003.png 0) has label 0 where train800.txt + "
                                  "val200.txt has images/003.png 3"]),
    "union in another order": (lambda d: rewrite(d, "train800val200", lambda ls: ls[4:] + ls[:4]),
                               ["line 3 (images/000.png 0) has label 0 where train800.txt + "
                                "val200.txt has images/002.png 2"]),
    "train and test share": (lambda d: rewrite(d, "test", lambda ls: ls + ["images/001.png 1\n"]),
                             ["{d}/train800val200.txt and {d}/test.txt share 1 image(s) "
                              "(line 7: images/001.png of test.txt)"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_layouts_name_the_file_line_and_expected_layout(tmp_path, case):
    edit, parts = BAD[case]
    folder = write_task(tmp_path, "eurosat", labels=[0, 1, 2, 3])
    edit(folder)
    with pytest.raises(DatasetLayoutError) as info:
        load("eurosat", tmp_path)
    message = str(info.value)
    for part in parts:
        assert part.format(d=folder) in message, message
    assert message.startswith("VTAB1k_eurosat: ")
    assert ("Expected layout under DATASET.ROOT: vtab-1k/eurosat/{train800,val200,train800val200,"
            "test}.txt, lines '<relpath> <label>' with 0 <= label < 10, the images at "
            "vtab-1k/eurosat/<relpath>. Instructions: see DATASETS.md#vtab-1k.") in message


def test_missing_task_folder_and_refused_options(tmp_path, caplog):
    with pytest.raises(DatasetLayoutError, match=r"VTAB1k_dtd: dataset folder not found .*"
                       r"vtab-1k/dtd\. Expected layout under DATASET.ROOT: vtab-1k/dtd/\{train800"):
        load("dtd", tmp_path)
    write_task(tmp_path, "dtd")
    with pytest.raises(ConfigError, match=r"DATASET.NUM_SHOTS=16 is not supported by VTAB1k_dtd: "
                       r"VTAB-1k is already a 1000-image few-shot setting"):
        load("dtd", tmp_path, "DATASET.NUM_SHOTS", "16")
    assert len(load("dtd", tmp_path, "DATASET.NUM_SHOTS", "0").train_x) == 6
    caplog.clear()  # earlier loads may have logged INFO lines (when another test set the level)
    with caplog.at_level(logging.WARNING, logger="datasets.vtab"):
        load("dtd", tmp_path, "INPUT.TRANSFORMS", "['normalize']")
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        load("dtd", tmp_path, "INPUT.TRANSFORMS", "['random_flip', 'normalize']")
    assert ("VTAB1k_dtd: INPUT.TRANSFORMS has random_flip; VTAB's pipeline (KMnP/vpt) only "
            "resizes") in caplog.text
    with pytest.raises(ConfigError, match=r"DATASET.SUBSAMPLE_CLASSES='base' is not supported"):
        load("dtd", tmp_path, "DATASET.SUBSAMPLE_CLASSES", "base")
    message = "DATASET.VTAB.MODE must be one of final, tune; got 'tunes'. Did you mean 'tune'?"
    with pytest.raises(ConfigError, match=message):
        load("dtd", tmp_path, "DATASET.VTAB.MODE", "tunes")
    cfg = make_cfg("VTAB1k_dtd", tmp_path, "DATASET.VTAB.MODE", "tunes", "TRAINER.NAME", "ZeroshotCLIP")
    with pytest.raises(ConfigError, match=message):
        validate_cfg(cfg, training=False)


# ---------------------------------------------------------------- the toy tasks

def test_existing_renders_are_bit_identical():
    """render_with_box added the box: the toy world's pixels (GENERATOR_VERSION 1) never change."""
    expected = {"ToyShapes": "d2b0491d933e1567", "ToyTextures": "f27b55ff7f58ba39",
                "ToySketch": "8ef655d0add16a4b"}
    for domain, digest in expected.items():
        image = toy_generator.render(domain, 0, 0, 0, 64)
        assert hashlib.sha256(np.asarray(image).tobytes()).hexdigest()[:16] == digest
        same, box = toy_generator.render_with_box(domain, 0, 0, 0, 64)
        assert same.tobytes() == image.tobytes() and 0 <= box[0] < box[2] <= 64
    assert toy_generator.render("ToySketch", 37, 5).tobytes() == \
        toy_generator.render_with_box("ToySketch", 37, 5)[0].tobytes()


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("vtab_toy"))
    for task in TOY_VTAB_TASKS:  # generated on first use by the dataset class
        load(task, root)
    return root


@pytest.mark.parametrize("mode", ["final", "tune"])
def test_toy_tasks_generate_and_load(toy_root, mode):
    sizes = toy_vtab.TOY_SPLIT_SIZES
    for task, spec in TOY_VTAB_TASKS.items():
        data = load(task, toy_root, "DATASET.VTAB.MODE", mode)
        train_n, test_n = ((sizes["train800"] + sizes["val200"], sizes["test"]) if mode == "final"
                           else (sizes["train800"], sizes["val200"]))
        assert (len(data.train_x), len(data.test)) == (train_n, test_n)
        assert data.num_classes == spec.num_classes
        counts = np.bincount([d.label for d in data.train_x], minlength=spec.num_classes)
        assert counts.tolist() == [train_n // spec.num_classes] * spec.num_classes


def test_toy_samples_and_labels(toy_root):
    folder = os.path.join(toy_root, "vtab-1k-toy")
    indices = {}
    for task in TOY_VTAB_TASKS:
        for name in ("train800", "val200", "test"):
            with open(os.path.join(folder, task, f"{name}.txt")) as f:
                indices[task, name] = [(int(ln.split()[0][7:12]), int(ln.split()[1])) for ln in f]
        used = [j for name in ("train800", "val200", "test") for j, _ in indices[task, name]]
        assert len(used) == len(set(used))  # the splits are disjoint
    # labels are what the renders show: colour / shape of the toy class, quadrant of the box
    j, label = indices["toy_colour", "test"][5]
    toy_label = toy_vtab._toy_label(label, (j // 8) % 8)
    assert toy_generator.class_parts(toy_label)[0] == list(toy_generator.COLOURS)[label]
    j, label = indices["toy_shape", "train800"][3]
    assert toy_generator.class_parts(toy_vtab._toy_label((j // 8) % 8, label))[1] == \
        toy_generator.SHAPES[label]
    for j, label in indices["toy_position", "val200"][:6]:
        image, (x0, y0, x1, y1) = toy_generator.render_with_box(
            "ToySketch", j % 64, toy_vtab.VTAB_INDEX_START + j, 0, 64)
        assert label == 2 * ((y0 + y1) / 2 > 32) + ((x0 + x1) / 2 > 32)
        with open(os.path.join(folder, "toy_position", f"images/{j:05d}.png"), "rb") as f:
            assert np.array_equal(np.asarray(Image.open(f).convert("RGB")), np.asarray(image))
    # indices stay between the toy-world splits and pretraining
    assert toy_vtab.VTAB_INDEX_START + 10_000 < toy_generator.PRETRAIN_INDEX_START


def test_toy_generation_is_idempotent_and_refuses_foreign_folders(toy_root, tmp_path):
    marker = os.path.join(toy_root, "vtab-1k-toy", "toy_colour", "toy_vtab.json")
    before = os.stat(marker).st_mtime_ns
    toy_vtab.make_toy_vtab(toy_root, ["toy_colour"])
    from tests.tool_modules import load_tool

    load_tool("make_toy_data").main(["--root", toy_root, "--vtab"])  # the instructions' command
    assert os.stat(marker).st_mtime_ns == before
    foreign = tmp_path / "vtab-1k-toy" / "toy_shape"
    foreign.mkdir(parents=True)
    with pytest.raises(FileExistsError, match="is not a toy VTAB task folder"):
        toy_vtab.make_toy_vtab(str(tmp_path), ["toy_shape"])
    assert not any(p.startswith(".") for p in os.listdir(tmp_path / "vtab-1k-toy"))
    with pytest.raises(ValueError, match="toy VTAB tasks are toy_colour, toy_shape, toy_position"):
        toy_vtab.make_toy_vtab(str(tmp_path), ["toy_size"])


# ---------------------------------------------------------------- tools/convert_vtab.py

def _varint(n):
    out = b""
    while True:
        out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            return out


def _ld(number, payload):  # a length-delimited protobuf field
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_example(features):
    """A tf.train.Example: bytes lists, packed float lists, packed int64 lists."""
    entries = b""
    for key, values in features.items():
        if isinstance(values[0], bytes):
            feature = _ld(1, b"".join(_ld(1, v) for v in values))
        elif isinstance(values[0], float):
            feature = _ld(2, _ld(1, struct.pack(f"<{len(values)}f", *values)))
        else:
            feature = _ld(3, _ld(1, b"".join(_varint(v) for v in values)))
        entries += _ld(1, _ld(1, key.encode()) + _ld(2, feature))
    return _ld(1, entries)


def write_tfrecord(path, records, crc):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        for data in records:
            length = struct.pack("<Q", len(data))
            f.write(length + struct.pack("<I", crc(length)) + data + struct.pack("<I", crc(data)))


def png(value, mode="RGB"):
    out = io.BytesIO()
    Image.new(mode, (4, 4), value).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def convert():
    from tests.tool_modules import load_tool

    return load_tool("convert_vtab")


def test_crc_and_split_definitions(convert):
    assert convert.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    tasks = convert.TFDS_TASKS
    assert tasks["caltech101"].val200.bounds(3060) == (2754, 2954)  # train[90%:][:200]
    assert tasks["eurosat"].val200.bounds(27000) == (16200, 16400)
    assert tasks["eurosat"].test.bounds(27000) == (21600, 27000)
    assert tasks["dsprites_ori"].test.bounds(737280) == (663552, 737280)
    assert tasks["smallnorb_ele"].test == convert.Part("test", tasks["smallnorb_ele"].test.start)
    assert tasks["smallnorb_ele"].test.bounds(24300) == (12150, 24300)
    assert tasks["dtd"].val200 == convert.Part("validation", 0, length=200)
    assert (tasks["dmlab"].version, tasks["kitti"].version, tasks["sun397"].builder) == (
        "2.0.1", "3.2.0", "sun397/tfds")
    assert tasks["clevr_dist"].label({"objects/pixel_coords": [1.0, 2.0, 9.2, 3.0, 4.0, 12.0]}) == 3
    assert tasks["kitti"].label({"objects/type": [3, 0], "objects/location": [0, 0, 5.0, 0, 0, 25.0]}) == 2
    assert tasks["kitti"].label({"objects/type": [4], "objects/location": [0, 0, 5.0]}) == 3


def test_convert_round_trip_and_errors(convert, tmp_path, monkeypatch, capsys):
    crc = convert.masked_crc
    tfds = tmp_path / "tfds"
    # svhn: val200 = train[90%:][:2] once shortened; dsprites: single channel, binned label
    monkeypatch.setitem(convert.TFDS_TASKS, "svhn", convert.TFDS_TASKS["svhn"]._replace(
        train800=convert.Part("train", 0, length=8), val200=convert.Part("train", convert._pct(90), length=2)))
    monkeypatch.setitem(convert.TFDS_TASKS, "dsprites_loc", convert.TFDS_TASKS["dsprites_loc"]._replace(
        train800=convert.Part("train", 0, length=3), val200=convert.Part("train", convert._pct(80), length=1)))
    images = [png((10 * i, 0, 0)) for i in range(20)]
    svhn = [encode_example({"image": [images[i]], "label": [i % 10]}) for i in range(20)]
    for k in range(2):  # two shards, read in order
        write_tfrecord(str(tfds / f"svhn_cropped/3.0.0/svhn_cropped-train.tfrecord-0000{k}-of-00002"),
                       svhn[10 * k:10 * k + 10], crc)
    write_tfrecord(str(tfds / "svhn_cropped/3.0.0/svhn_cropped-test.tfrecord-00000-of-00001"), svhn[:5], crc)
    os.makedirs(tfds / "svhn_cropped/2.0.0")  # another major version: ignored
    sprites = [encode_example({"image": [png(i % 2, "L")], "label_x_position": [3 * i],
                               "label_orientation": [0]}) for i in range(10)]
    write_tfrecord(str(tfds / "dsprites/2.0.0/dsprites-train.tfrecord-00000-of-00001"), sprites, crc)
    out = tmp_path / "data" / "vtab-1k"
    assert convert.main(["--tfds-dir", str(tfds), "--out", str(out), "--tasks", "svhn",
                         "dsprites_loc"]) == 0
    folder = out / "svhn"
    lines = {n: (folder / f"{n}.txt").read_text().splitlines() for n in LIST_FILES}
    assert lines["train800"][:2] == ["images/train800/000000.png 0", "images/train800/000001.png 1"]
    assert lines["val200"] == ["images/val200/000000.png 8", "images/val200/000001.png 9"]
    assert [ln.split()[1] for ln in lines["train800val200"]] == [str(i) for i in range(8)] + ["8", "9"]
    assert len(lines["test"]) == 5
    assert (folder / "images/val200/000001.png").read_bytes() == images[19]  # copied as is
    assert (folder / "images/train800val200/000009.png").read_bytes() == images[19]
    for mode in ("final", "tune"):
        data = load("svhn", tmp_path / "data", "DATASET.VTAB.MODE", mode)
        assert len(data.train_x) == (10 if mode == "final" else 8)
    sprite_lines = (out / "dsprites_loc" / "train800.txt").read_text().split()
    assert sprite_lines[1::2] == ["0", "1", "3"]  # x position 0, 3, 6 in 32 bins -> 16 bins
    rgb = np.asarray(Image.open(out / "dsprites_loc" / "images/train800/000001.png"))
    assert rgb.shape == (4, 4, 3) and rgb.max() == 255
    assert load("dsprites_loc", tmp_path / "data").num_classes == 16
    convert.convert_task(str(tfds), str(tmp_path / "jpeg"), "svhn", jpeg=True)  # NOAH's encoding
    with Image.open(tmp_path / "jpeg" / "svhn" / "images/test/000004.jpg") as im:
        assert im.format == "JPEG" and im.size == (4, 4)

    # a corrupt byte in a record that is read: file and record named; nothing left behind
    shard = tfds / "svhn_cropped/3.0.0/svhn_cropped-train.tfrecord-00001-of-00002"
    raw = bytearray(shard.read_bytes())
    offset = sum(12 + len(r) + 4 for r in svhn[10:18]) + 12 + 20  # in record 8 (val200)
    raw[offset] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(convert.ConvertError, match=rf"{shard}: record 8 has a bad data CRC"):
        convert.convert_task(str(tfds), str(out), "svhn", force=True)
    assert sorted(os.listdir(out)) == ["dsprites_loc", "svhn"]  # the old folder stays
    shard.write_bytes(bytes(raw[:-7]))
    assert convert.main(["--tfds-dir", str(tfds), "--out", str(out), "--tasks", "svhn"]) == 0  # complete: skipped
    with pytest.raises(convert.ConvertError, match=rf"{shard}: record 9 is truncated"):
        convert.convert_task(str(tfds), str(out), "svhn", force=True)
    assert convert.main(["--tfds-dir", str(tfds), "--out", str(out), "--tasks", "dtd"]) == 1
    assert capsys.readouterr().err == (f"error: dtd: no tfds version 3.*.* in {tfds}/dtd (VTAB "
                                       f"reads dtd:3.*.*; prepare it with tfds first)\n")
    os.makedirs(out / "dtd" / "mine")
    with pytest.raises(convert.ConvertError, match=r"dtd: .*/dtd exists without the four list files"):
        convert.convert_task(str(tfds), str(out), "dtd")
    assert os.path.isdir(out / "dtd" / "mine")
    write_tfrecord(str(tfds / "dtd/3.0.1/dtd-train.tfrecord-00000-of-00001"), svhn[:3], crc)
    with pytest.raises(convert.ConvertError, match=r"dtd: train800 needs records \[0, 800\) of split "
                       r"'train', which has 3"):
        convert.convert_task(str(tfds), str(tmp_path / "out2"), "dtd")
    assert os.listdir(tmp_path / "out2") == []  # the temporary folder is removed
