"""The feature cache never serves bad bytes and never blocks on one bad file: segments whose bytes
changed, truncated or missing files, keys files that are not JSON or carry no hashes (older
versions) are named in a warning, refilled with fresh encodings and removed; a read-only cache
serves its hits without a write; ``show`` names a malformed bucket metadata file."""
import errno
import json
import logging
import os
import tempfile

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

import dassl_lite.data.feature_cache as fc
from dassl_lite.data.datum import Datum
from dassl_lite.data.feature_cache import FeatureCache, main
from dassl_lite.data.feature_files import FeatureCacheError, read_bucket_meta
from dassl_lite.data.feature_loaders import fill_features

LOGGER = "dassl_lite.data.feature_cache"


@pytest.fixture(autouse=True)
def fresh_process_memory(monkeypatch):
    """Each test starts as a new process would: no parsed keys files, no reported segments."""
    monkeypatch.setattr(fc, "_SEGMENTS", {})
    monkeypatch.setattr(fc, "_BAD", set())


@pytest.fixture
def world(tmp_path):
    """Four small images, their keys, and an encoder that counts its calls."""
    items, rng = [], np.random.default_rng(0)
    for i in range(4):
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(path)
        items.append(Datum(str(path), label=i))
    keys = [f"{fc.image_identity(d.impath)}|test" for d in items]
    proj = torch.randn(3 * 6 * 6, 8, generator=torch.Generator().manual_seed(0))
    calls = []

    def encode(images):
        calls.append(len(images))
        return images.flatten(1) @ proj

    return items, keys, encode, calls, tmp_path / "cache"


def fill(root, world_, keys=None):
    items, all_keys, encode, _, _ = world_
    keys = keys or all_keys
    items = items[:len(keys)]
    bucket = FeatureCache(str(root)).bucket("enc", "fp32", "T", "fp32")
    return fill_features(bucket, items, keys, [None] * len(keys), T.ToTensor(), encode, 2)


def fresh(world_):
    """What an uncached encode of the images gives."""
    items, _, encode, _, _ = world_
    with torch.no_grad():
        return encode(torch.stack([T.ToTensor()(Image.open(d.impath).convert("RGB"))
                                   for d in items]))


def only_segment(root):
    (bucket,) = [os.path.join(root, b) for b in os.listdir(root)]
    (name,) = [n for n in os.listdir(bucket) if n.endswith(fc.KEYS_SUFFIX)]
    return os.path.join(bucket, name[:-len(fc.KEYS_SUFFIX)])


def flip_last_byte(path):
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0x01  # the last feature value: the file still parses, one value differs
    open(path, "wb").write(bytes(data))


def truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


def legacy_keys_file(path):
    with open(path) as f:
        keys = json.load(f)["keys"]
    with open(path, "w") as f:
        json.dump(keys, f)  # the plain list an older dassl_lite wrote


def edit_a_key(path):
    with open(path) as f:
        record = json.load(f)
    record["keys"][0], record["keys"][1] = record["keys"][1], record["keys"][0]  # rows swapped
    with open(path, "w") as f:
        json.dump(record, f)


BAD_SEGMENTS = {  # how a segment is damaged: (file, damage, what the warning says)
    "changed bytes": (".npy", flip_last_byte, "does not match its sha256"),
    "truncated features": (".npy", truncate, "is truncated: "),
    "missing features": (".npy", os.remove, "is missing (its keys file is there)"),
    "truncated keys": (fc.KEYS_SUFFIX, truncate, "is not valid JSON"),
    "older version": (fc.KEYS_SUFFIX, legacy_keys_file, "has no integrity hash"),
    "keys edited": (fc.KEYS_SUFFIX, edit_a_key, "does not match its keys_sha256"),
}


@pytest.mark.parametrize("damage", list(BAD_SEGMENTS))
def test_a_bad_segment_is_named_refilled_and_removed(world, caplog, damage):
    suffix, hurt, says = BAD_SEGMENTS[damage]
    root, calls = world[4], world[3]
    first, stats = fill(root, world)
    assert stats.encoded == 4 and torch.allclose(first, fresh(world), atol=1e-5)
    stem = only_segment(root)
    hurt(stem + suffix)
    fc._SEGMENTS.clear()  # a later run: a new process
    caplog.set_level(logging.WARNING, logger=LOGGER)
    again, stats = fill(root, world)
    assert torch.equal(again, first)  # what a fresh encode gives, never the damaged bytes
    assert (stats.hits, stats.encoded) == (0, 4)
    (message,) = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert message.startswith(f"Feature cache: {stem + suffix} {says}")
    assert "are not served (encoded again where needed) and the segment was removed" in message
    assert not os.path.exists(stem + fc.KEYS_SUFFIX) and not os.path.exists(stem + ".npy")
    caplog.clear()
    calls.clear()
    fc._SEGMENTS.clear()
    third, stats = fill(root, world)  # the refill serves every later run
    assert torch.equal(third, first) and (stats.hits, stats.encoded) == (4, 0) and calls == []
    assert not caplog.records


def test_truncated_message_gives_both_sizes(world, caplog):
    fill(world[4], world)
    stem = only_segment(world[4])
    size = os.path.getsize(stem + ".npy")
    truncate(stem + ".npy")
    fc._SEGMENTS.clear()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    fill(world[4], world)
    assert f"is truncated: {size // 2:,} of {size:,} bytes" in caplog.messages[0]


def test_changed_bytes_are_checked_on_every_read_in_one_process(world):
    """Hashes are checked whenever a segment is read, not once per process."""
    first, _ = fill(world[4], world)
    stem = only_segment(world[4])
    bucket = FeatureCache(str(world[4])).bucket("enc", "fp32", "T", "fp32")
    got, missing = bucket.read(world[1])
    assert missing == [] and torch.equal(got, first)
    flip_last_byte(stem + ".npy")
    got, missing = bucket.read(world[1])
    assert got is None and missing == [0, 1, 2, 3]


def test_a_good_copy_serves_keys_of_a_bad_segment(world):
    """Two segments hold the same keys (concurrent fillers): a bad one falls back to the other."""
    first, _ = fill(world[4], world)
    bucket = FeatureCache(str(world[4])).bucket("enc", "fp32", "T", "fp32")
    bucket.write(world[1], first)
    bad = bucket.index()[world[1][0]][0]  # the segment the index serves first
    flip_last_byte(os.path.join(bucket.dir, bad + ".npy"))
    got, missing = bucket.read(world[1])
    assert missing == [] and torch.equal(got, first)
    assert bucket.index()[world[1][0]][0] != bad


WRITES = ("utime", "replace", "rename", "remove", "unlink", "mkdir", "makedirs", "chmod")


@pytest.fixture
def no_writes(monkeypatch):
    """Every file-system write the cache could attempt fails the test (and is recorded)."""
    attempts = []

    def refuse(name):
        def write(*args, **kwargs):
            attempts.append((name, args))
            raise AssertionError(f"write attempted: os.{name}{args}")
        return write

    def begin():
        for name in WRITES:
            monkeypatch.setattr(os, name, refuse(name))
        monkeypatch.setattr(tempfile, "mkstemp", refuse("mkstemp"))
    return begin, attempts


def test_read_only_cache_serves_hits_without_trying_to_write(world, monkeypatch, no_writes,
                                                             caplog):
    """A folder the process cannot write (``os.access``: a read-only mount, or no permission;
    as root a chmod would not stop the write, so the check is simulated)."""
    root, calls = world[4], world[3]
    first, _ = fill(root, world, keys=world[1][:3])
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: (
        mode != os.W_OK or not str(p).startswith(str(root))) and real_access(p, mode))
    begin, attempts = no_writes
    begin()
    fc._SEGMENTS.clear()
    calls.clear()
    caplog.set_level(logging.INFO)
    got, stats = fill(root, world, keys=world[1][:3])
    assert torch.equal(got, first) and (stats.hits, stats.encoded) == (3, 0) and calls == []
    got, stats = fill(root, world)  # one image missing: encoded for this run, not stored
    assert torch.allclose(got, fresh(world), atol=1e-5) and (stats.hits, stats.encoded) == (3, 1)
    assert attempts == []
    assert any("is read-only" in m and "not stored" in m for m in caplog.messages)


def test_a_refused_write_makes_the_bucket_read_only(world, monkeypatch, caplog):
    """``os.access`` says yes, but the file system refuses (EROFS): one notice, hits served,
    misses not stored, and no further write attempts."""
    root = world[4]
    first, _ = fill(root, world, keys=world[1][:3])
    fc._SEGMENTS.clear()
    attempts = []

    def read_only_fs(name):
        def write(*args, **kwargs):
            attempts.append(name)
            raise OSError(errno.EROFS, "Read-only file system", args[0])
        return write

    for name in ("utime", "replace", "mkdir"):
        monkeypatch.setattr(os, name, read_only_fs(name))
    monkeypatch.setattr(tempfile, "mkstemp", read_only_fs("mkstemp"))
    caplog.set_level(logging.WARNING, logger=LOGGER)
    bucket = FeatureCache(str(root)).bucket("enc", "fp32", "T", "fp32")
    got, missing = bucket.read(world[1][:3])
    assert missing == [] and torch.equal(got, first) and attempts == ["utime"]
    stored = bucket.write(world[1][3:], torch.ones(1, 8))
    assert torch.equal(stored, torch.ones(1, 8)) and attempts == ["utime"]
    assert caplog.messages == [
        f"Feature cache {bucket.dir} is read-only (Read-only file system): its hits are served; "
        f"features it misses are encoded for this run and not stored"]


def test_read_only_cache_skips_a_bad_segment_and_leaves_it(world, monkeypatch, caplog):
    root = world[4]
    first, _ = fill(root, world)
    stem = only_segment(root)
    truncate(stem + ".npy")
    fc._SEGMENTS.clear()
    monkeypatch.setattr(os, "access", lambda p, mode: mode != os.W_OK)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    got, stats = fill(root, world)
    assert torch.equal(got, first) and stats.encoded == 4
    assert os.path.exists(stem + ".npy") and os.path.exists(stem + fc.KEYS_SUFFIX)
    assert any(m.startswith(f"Feature cache: {stem}.npy is truncated") and
               m.endswith("and the segment is left in place (opened read-only)")
               for m in caplog.messages)


EXPECTED = ("expected a JSON object with the string fields encoder_sha256, dtype, transform, "
            "precision (dtype one of fp16, fp32), as the feature cache writes it")


@pytest.mark.parametrize("content, problem", [
    ("{not json", "is not valid JSON (Expecting property name"),
    ("[1, 2]", "is malformed: a JSON list;"),
    ('{"encoder_sha256": "e", "dtype": "fp32", "transform": "T"}',
     "is malformed: missing or non-string field(s) precision;"),
    ('{"encoder_sha256": "e", "dtype": "int8", "transform": "T", "precision": "fp32"}',
     "is malformed: dtype 'int8';"),
])
def test_show_names_a_malformed_bucket_metadata_file(tmp_path, capsys, content, problem):
    cache = FeatureCache(str(tmp_path))
    cache.bucket("e" * 64, "fp16", "Resize(64)").write(["a"], torch.ones(1, 4))
    bad = tmp_path / "0badbucket" / "meta.json"
    bad.parent.mkdir()
    bad.write_text(content)
    assert main(["show", "--dir", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert f"Feature cache {tmp_path}: 1 bucket(s)" in out and "eeeeeeeeeeee" in out
    assert err.startswith(f"error: Feature cache bucket metadata {bad} {problem}")
    assert err.rstrip().endswith(EXPECTED)
    with pytest.raises(FeatureCacheError, match="bucket metadata .*0badbucket"):
        cache.summary()
    with pytest.raises(FeatureCacheError, match=problem.split("(")[0].rstrip()):
        read_bucket_meta(str(bad))


def test_show_reports_a_bad_segment_and_changes_nothing(world, capsys, caplog):
    root = world[4]
    fill(root, world)
    stem = only_segment(root)
    flip_last_byte(stem + ".npy")
    truncate(stem + fc.KEYS_SUFFIX)
    before = sorted(os.listdir(os.path.dirname(stem)))
    fc._SEGMENTS.clear()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert main(["show", "--dir", str(root)]) == 0
    assert sorted(os.listdir(os.path.dirname(stem))) == before
    assert any(m.startswith(f"Feature cache: {stem}{fc.KEYS_SUFFIX} is not valid JSON")
               for m in caplog.messages)
    assert " 0 " in capsys.readouterr().out.splitlines()[-1]  # no entry counted


def test_an_unreadable_segment_is_named_and_left_in_place(world, monkeypatch, caplog):
    """A file this process may not read (as root no chmod stops a read, so it is simulated)."""
    first, _ = fill(world[4], world)
    stem = only_segment(world[4])

    def denied(path, record):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(fc, "load_verified", denied)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    got, stats = fill(world[4], world)
    assert torch.equal(got, first) and stats.encoded == 4
    assert caplog.messages[0].startswith(
        f"Feature cache: {stem}.npy cannot be read (Permission denied)")
    assert caplog.messages[0].endswith("and the segment is left in place")
    assert os.path.exists(stem + ".npy") and os.path.exists(stem + fc.KEYS_SUFFIX)
