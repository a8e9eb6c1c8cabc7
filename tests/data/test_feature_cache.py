"""The on-disk feature cache: round trips, storage dtypes, keys that change with what determines
the features, atomic segments, concurrent fillers, the size bound, show/clear."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dassl_lite.data.cache_admin import clear_cache
from dassl_lite.data.feature_cache import (
    FeatureCache, image_identity, module_digest, stable_seed, store_dtype_name,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def feats_for(keys, dim=8):
    """Deterministic features per key (what a concurrent filler would compute)."""
    return torch.stack([torch.randn(dim, generator=torch.Generator().manual_seed(
        stable_seed(k) % 2**31)) for k in keys])


def test_round_trip_and_missing_positions(tmp_path):
    bucket = FeatureCache(str(tmp_path)).bucket("abc", "fp32", "T", "fp32")
    keys = [f"img{i}|test" for i in range(5)]
    bucket.write(keys[:3], feats_for(keys[:3]))
    got, missing = bucket.read(keys)
    assert missing == [3, 4]
    assert torch.equal(got[:3], feats_for(keys[:3])) and not got[3:].any()
    bucket.write(keys[3:], feats_for(keys[3:]))
    got, missing = bucket.read(list(reversed(keys)))
    assert missing == [] and torch.equal(got, feats_for(list(reversed(keys))))


def test_fp16_storage_rounds_and_auto_keeps_the_model_dtype(tmp_path):
    assert store_dtype_name("auto", torch.float32) == "fp32"
    assert store_dtype_name("auto", torch.bfloat16) == "fp32"  # bf16 values are exact in fp32
    assert store_dtype_name("auto", torch.float16) == "fp16"
    with pytest.raises(ValueError, match="DTYPE must be one of auto, fp16, fp32; got 'int8'"):
        store_dtype_name("int8", torch.float32)
    bucket = FeatureCache(str(tmp_path)).bucket("abc", "fp16", "T")
    x = feats_for(["a|test"])
    bucket.write(["a|test"], x)
    seg = [n for n in os.listdir(bucket.dir) if n.endswith(".npy")][0]
    assert np.load(os.path.join(bucket.dir, seg)).dtype == np.float16
    got, _ = bucket.read(["a|test"])
    assert torch.equal(got, x.half().float())


def test_keys_files_are_parsed_once_and_forgotten_when_evicted(tmp_path, monkeypatch):
    """Committed segments are immutable: a process parses each keys file once. A segment removed
    by another process (eviction, clear) drops out of the index and of that memory."""
    import dassl_lite.data.feature_cache as fc

    bucket = FeatureCache(str(tmp_path)).bucket("abc", "fp32", "T", "fp32")
    bucket.write(["a|test"], feats_for(["a|test"]))
    bucket.write(["b|test"], feats_for(["b|test"]))
    loads = []
    real_load = json.load
    monkeypatch.setattr(fc.json, "load", lambda f: loads.append(f.name) or real_load(f))
    for _ in range(3):
        got, missing = bucket.read(["a|test", "b|test"])
        assert missing == [] and torch.equal(got, feats_for(["a|test", "b|test"]))
    assert len(loads) == 0  # both written by this process: known since their write
    fc._SEGMENTS.clear()  # as a fresh process
    bucket.read(["a|test"])
    bucket.read(["a|test"])
    assert len(loads) == 2  # two segments, each parsed once
    seg_a = fc.FeatureBucket.index(bucket)["a|test"][0]
    for suffix in (".npy", fc.KEYS_SUFFIX):
        os.remove(os.path.join(bucket.dir, seg_a + suffix))
    got, missing = bucket.read(["a|test", "b|test"])
    assert missing == [0] and torch.equal(got[1], feats_for(["b|test"])[0])
    assert not any(seg_a in p for p in fc._SEGMENTS)


def test_buckets_differ_by_encoder_dtype_transform_and_precision(tmp_path):
    cache = FeatureCache(str(tmp_path))
    base = cache.bucket("enc", "fp32", "Resize(64)", "fp32").dir
    others = {cache.bucket("enc2", "fp32", "Resize(64)", "fp32").dir,
              cache.bucket("enc", "fp16", "Resize(64)", "fp32").dir,
              cache.bucket("enc", "fp32", "Resize(32)", "fp32").dir,
              cache.bucket("enc", "fp32", "Resize(64)", "amp").dir}
    assert base not in others and len(others) == 4
    with open(os.path.join(base, "meta.json")) as f:
        assert json.load(f) == {"encoder_sha256": "enc", "dtype": "fp32",
                                "transform": "Resize(64)", "precision": "fp32"}


def test_module_digest_follows_the_weights():
    m = torch.nn.Linear(4, 3)
    d0 = module_digest(m)
    assert module_digest(m) == d0
    with torch.no_grad():
        m.weight[0, 0] += 1e-6
    assert module_digest(m) != d0
    assert module_digest(m.half()) != module_digest(m.float())


def test_image_identity_changes_when_the_file_changes(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"x" * 10)
    first = image_identity(str(path))
    assert first.startswith(os.path.realpath(path) + "|10|")
    os.utime(path, ns=(1, 1))
    assert image_identity(str(path)) != first
    path.write_bytes(b"y" * 11)
    assert "|11|" in image_identity(str(path))


def test_uncommitted_segment_is_ignored(tmp_path):
    bucket = FeatureCache(str(tmp_path)).bucket("abc", "fp32", "T")
    np.save(os.path.join(bucket.dir, "seg-dead.npy"), np.zeros((1, 8), np.float32))  # no keys
    got, missing = bucket.read(["a|test"])
    assert got is None and missing == [0]


def test_size_bound_evicts_least_recently_used_segments(tmp_path):
    cache = FeatureCache(str(tmp_path), max_bytes=10**9)
    bucket = cache.bucket("abc", "fp32", "T")
    for i in range(3):
        bucket.write([f"k{i}"], torch.ones(1, 1000))
    stems = {json.load(open(stem + ".keys.json"))["keys"][0]: stem
             for _, _, stem in cache.segments()}
    for key, used in (("k0", 100), ("k1", 300), ("k2", 200)):
        os.utime(stems[key] + ".keys.json", (used, used))
    bucket.read(["k0"])  # a read marks k0 as just used: k2 is now the least recently used
    size = cache.segments()[0][1]
    cache.max_bytes = 2 * size + 10
    assert cache.enforce_bound() == 1
    got, missing = bucket.read(["k0", "k1", "k2"])
    assert missing == [2] and not os.path.exists(stems["k2"] + ".npy")


def test_summary_and_clear(tmp_path):
    cache = FeatureCache(str(tmp_path))
    cache.bucket("abc", "fp32", "T").write(["a", "b"], torch.ones(2, 4))
    rows = cache.summary()
    assert len(rows) == 1 and rows[0]["entries"] == 2 and rows[0]["segments"] == 1
    assert clear_cache(str(tmp_path)) == (1, rows[0]["bytes"]) and rows[0]["bytes"] > 0
    assert cache.summary() == [] and os.listdir(tmp_path) == []


FILLER = r"""
import sys, torch
sys.path.insert(0, {repo!r})
from dassl_lite.data.feature_cache import FeatureCache, stable_seed
bucket = FeatureCache({root!r}).bucket("enc", "fp32", "T")
keys = [f"img{{i}}|test" for i in range({start}, {stop})]
for k in keys:  # one segment per key: many small atomic writes racing the other process
    g = torch.Generator().manual_seed(stable_seed(k) % 2**31)
    bucket.write([k], torch.randn(1, 8, generator=g))
"""


def test_two_processes_filling_at_once_leave_it_consistent(tmp_path):
    root = str(tmp_path / "cache")
    procs = [subprocess.Popen([sys.executable, "-c", FILLER.format(repo=REPO, root=root,
                                                                     start=a, stop=b)])
             for a, b in ((0, 20), (10, 30))]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    bucket = FeatureCache(root).bucket("enc", "fp32", "T")
    keys = [f"img{i}|test" for i in range(30)]
    got, missing = bucket.read(keys)
    assert missing == [] and torch.equal(got, feats_for(keys))
    assert not [n for n in os.listdir(bucket.dir) if n.endswith(".tmp")]


def test_cache_tool_shows_and_clears(tmp_path):
    FeatureCache(str(tmp_path)).bucket("e" * 64, "fp16", "Resize(64)").write(["a"], torch.ones(1, 4))
    tool = [sys.executable, os.path.join(REPO, "tools", "cache.py")]
    shown = subprocess.run(tool + ["show", "--dir", str(tmp_path)], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert f"Feature cache {tmp_path}: 1 bucket(s)" in shown.stdout
    assert "eeeeeeeeeeee" in shown.stdout and "Resize(64)" in shown.stdout
    cleared = subprocess.run(tool + ["clear", "--dir", str(tmp_path)], capture_output=True,
                             text=True)
    assert cleared.returncode == 0 and f"Cleared {tmp_path}" in cleared.stdout
    assert FeatureCache(str(tmp_path)).summary() == []
