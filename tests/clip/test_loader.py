"""Weight loading: archives, state dicts, cache lookup, checked atomic download, error texts."""
import copy
import hashlib
import http.server
import re
import socket
import threading
from functools import partial

import pytest
import torch

from dassl_lite.clip import CLIPChecksumError, CLIPWeightsNotFoundError, available_models, load_clip
from dassl_lite.clip import loader

OPENAI_NAMES = ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16",
                "ViT-L/14", "ViT-L/14@336px"]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """(folder served on 127.0.0.1, its base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def checkpoint(tmp_path, vit_state_dict):
    """(path of a plain saved state dict of the tiny ViT, its SHA-256)."""
    path = tmp_path / "tiny.pt"
    torch.save(vit_state_dict, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def same_features(model, reference, images):
    with torch.no_grad():
        return torch.equal(model.encode_image(images), reference.encode_image(images))


def publish(root, base_url, checkpoint_path, sha256, name="Tiny.pt"):
    """Serve the file under <sha256>/<name> and return its URL."""
    (root / sha256).mkdir()
    (root / sha256 / name).write_bytes(checkpoint_path.read_bytes())
    return f"{base_url}/{sha256}/{name}"


def test_available_models():
    assert available_models() == [*OPENAI_NAMES, "ToyCLIP"]
    for name in OPENAI_NAMES:
        url = loader._MODELS[name]
        assert url.startswith("https://openaipublic.azureedge.net/clip/models/")
        assert re.fullmatch(r"[0-9a-f]{64}", url.split("/")[-2])
    assert loader._MODELS["ViT-B/16"].endswith(
        "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt")


def test_plain_and_wrapped_state_dicts_load_by_path(tmp_path, checkpoint, vit_model, make_images):
    path, _ = checkpoint
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": torch.load(path), "epoch": 3}, wrapped)
    images = make_images(vit_model)
    for source in (path, str(wrapped)):
        model = load_clip(source)
        assert not model.training and model.dtype == torch.float32
        assert all(p.requires_grad for p in model.parameters())
        assert same_features(model, vit_model, images)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_torchscript_archive_loads(tmp_path, vit_model, make_images):
    images = make_images(vit_model)
    module = copy.deepcopy(vit_model)
    for key, value in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
        module.__dict__.pop(key, None)
        module.register_buffer(key, torch.tensor(value))  # as in OpenAI's archives
    traced = torch.jit.trace_module(module, {"encode_image": images})
    path = tmp_path / "archive.pt"
    traced.save(str(path))
    assert loader.is_torchscript_archive(path)
    assert "input_resolution" in loader.read_state_dict(path)
    assert same_features(load_clip(path), vit_model, images)


def test_precision_and_device(checkpoint):
    model = load_clip(checkpoint[0], device="cpu", precision="bf16")
    assert model.dtype == torch.bfloat16 and model.ln_final.weight.dtype == torch.float32
    assert load_clip(checkpoint[0], precision="fp16").dtype == torch.float16
    with pytest.raises(ValueError, match=re.escape("precision must be one of fp32, fp16, bf16; got 'fp64'")):
        load_clip(checkpoint[0], precision="fp64")


def test_download_checks_hash_and_caches(tmp_path, http_root, checkpoint, monkeypatch, vit_model,
                                         make_images):
    path, sha256 = checkpoint
    url = publish(*http_root, path, sha256)
    monkeypatch.setitem(loader._MODELS, "Tiny", url)
    cache = tmp_path / "cache"
    model = load_clip("Tiny", cache_dir=cache)
    assert sorted(p.name for p in cache.iterdir()) == ["Tiny.pt"]
    assert same_features(model, vit_model, make_images(vit_model))
    (http_root[0] / sha256 / "Tiny.pt").unlink()  # now served nowhere: the cache must be used
    assert same_features(load_clip("Tiny", cache_dir=cache), vit_model, make_images(vit_model))


def test_download_with_wrong_hash_leaves_nothing(tmp_path, http_root, checkpoint, monkeypatch):
    wrong = "0" * 64
    monkeypatch.setitem(loader._MODELS, "Tiny", publish(*http_root, checkpoint[0], wrong))
    cache = tmp_path / "cache"
    with pytest.raises(CLIPChecksumError, match=f"SHA-256 is {checkpoint[1]}, expected {wrong}"):
        load_clip("Tiny", cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_cached_file_with_wrong_hash_is_downloaded_again(tmp_path, http_root, checkpoint, monkeypatch):
    path, sha256 = checkpoint
    monkeypatch.setitem(loader._MODELS, "Tiny", publish(*http_root, path, sha256))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "Tiny.pt").write_bytes(b"truncated")
    load_clip("Tiny", cache_dir=cache)
    assert (cache / "Tiny.pt").read_bytes() == path.read_bytes()


def test_cache_dir_from_environment(tmp_path, checkpoint, monkeypatch):
    path, sha256 = checkpoint
    monkeypatch.setitem(loader._MODELS, "Tiny", f"http://127.0.0.1:9/{sha256}/Tiny.pt")
    monkeypatch.setenv("DASSL_LITE_CLIP_CACHE", str(tmp_path / "env_cache"))
    (tmp_path / "env_cache").mkdir()
    (tmp_path / "env_cache" / "Tiny.pt").write_bytes(path.read_bytes())
    assert load_clip("Tiny").visual.width == 128
    assert loader.cache_dir_for(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("DASSL_LITE_CLIP_CACHE")
    assert str(loader.cache_dir_for()).endswith(".cache/clip")


def test_offline_and_missing_message(tmp_path, monkeypatch):
    with socket.socket() as sock:  # a port on which nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{'a' * 64}/ViT-B-16.pt"
    monkeypatch.setitem(loader._MODELS, "ViT-B/16", url)
    target = tmp_path / "ViT-B-16.pt"
    with pytest.raises(CLIPWeightsNotFoundError) as info:
        load_clip("ViT-B/16", cache_dir=tmp_path)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for part in ("CLIP weights for 'ViT-B/16' are not at", str(target), url, "place it at",
                 "DASSL_LITE_CLIP_CACHE", f"curl -L -o ViT-B-16.pt {url}"):
        assert part in message
    assert list(tmp_path.iterdir()) == []


def test_local_models(tmp_path, monkeypatch, checkpoint):
    monkeypatch.setattr(loader, "ASSETS_DIR", tmp_path / "assets")
    expected = (f"CLIP weights for 'ToyCLIP' are not at {tmp_path / 'assets' / 'ToyCLIP.pt'}; this "
                f"file is produced by `python tools/pretrain_toy_clip.py`")
    with pytest.raises(CLIPWeightsNotFoundError, match=re.escape(expected)):
        load_clip("ToyCLIP")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "ToyCLIP.pt").write_bytes(checkpoint[0].read_bytes())
    assert load_clip("ToyCLIP").embed_dim == 32


def test_unknown_name_or_missing_path():
    with pytest.raises(CLIPWeightsNotFoundError, match=re.escape(
            "'ViT-B16' is neither a known CLIP model nor an existing checkpoint file")) as info:
        load_clip("ViT-B16")
    assert "Did you mean 'ViT-B/16'?" in str(info.value) and "ToyCLIP" in str(info.value)
    with pytest.raises(CLIPWeightsNotFoundError, match="looked for .*no/such/file.pt"):
        load_clip("no/such/file.pt")


def test_non_state_dict_file_is_rejected(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="holds a list; expected a TorchScript CLIP archive or a state dict"):
        load_clip(path)
