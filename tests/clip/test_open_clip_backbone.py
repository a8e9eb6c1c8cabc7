"""open_clip weights through ``MODEL.BACKBONE.NAME open_clip:MODEL:PRETRAINED``: features equal
open_clip's own, CoOp trains on them, unsupported architectures and missing weights are named."""
import json

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from dassl_lite.clip import load_clip, tokenize  # noqa: E402
from dassl_lite.clip.loader import CLIPWeightsNotFoundError  # noqa: E402
from dassl_lite.clip.open_clip_loader import OpenCLIPUnsupportedError  # noqa: E402

# A small ViT in open_clip's default (non-OpenAI) flavour: exact GELU, 32-wide vision heads,
# 16-wide text heads, so activation and head count must both follow open_clip's config.
TINY = "DasslTest-ViT-Tiny"
TINY_CFG = {"embed_dim": 32, "quick_gelu": False,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32,
                           "patch_size": 8},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 3,
                         "layers": 2}}


def random_open_clip(folder, name, cfg, seed=0):
    """open_clip model ``name`` (config ``cfg`` registered from ``folder``), random weights."""
    (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    torch.manual_seed(seed)
    model = open_clip.create_model(name).eval()
    with torch.no_grad():  # move the zero-initialised biases off zero
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def open_clip_file(tmp_path_factory):
    """(open_clip model with random weights, its training-checkpoint file as open_clip writes
    it: ``state_dict`` with DDP ``module.`` prefixes)."""
    folder = tmp_path_factory.mktemp("open_clip")
    model = random_open_clip(folder, TINY, TINY_CFG)
    path = folder / "epoch_1.pt"
    torch.save({"epoch": 1, "name": "random", "state_dict":
                {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return model, path


def test_features_equal_open_clip(open_clip_file):
    reference, path = open_clip_file
    ours = load_clip(f"open_clip:{TINY}:{path}")
    assert [b.attn.heads for b in ours.visual.transformer.resblocks] == [2, 2]
    assert ours.transformer.heads == 3
    torch.manual_seed(1)
    images = torch.randn(4, 3, 32, 32)
    text = tokenize(["a photo of a red circle.", "a blue square", "x"])
    assert torch.equal(open_clip.get_tokenizer(TINY)(["a blue square"]), text[1:2])
    with torch.no_grad():
        ref_img, ref_txt = reference.encode_image(images), reference.encode_text(text)
        img, txt = ours.encode_image(images), ours.encode_text(text)
    assert ref_img.abs().mean() > 0.1 and ref_txt.abs().mean() > 0.1
    torch.testing.assert_close(img, ref_img, atol=1e-5, rtol=0)
    torch.testing.assert_close(txt, ref_txt, atol=1e-5, rtol=0)
    assert torch.equal(ours.logit_scale.reshape(()), reference.logit_scale.detach().reshape(()))


def test_quickgelu_matters(open_clip_file):
    """Loaded as an OpenAI-format file (QuickGELU), the same weights give other features: the
    activation is taken from open_clip's config, not assumed."""
    reference, path = open_clip_file
    sd = {k: v for k, v in reference.state_dict().items()}
    plain = path.parent / "plain.pt"
    torch.save(sd, plain)
    openai_style = load_clip(str(plain))  # heads by OpenAI's rule; QuickGELU
    ours = load_clip(f"open_clip:{TINY}:{path}")
    text = tokenize(["a photo of a red circle."])
    with torch.no_grad():
        diff = (openai_style.encode_text(text) - ours.encode_text(text)).abs().max()
    assert diff > 1e-3


@pytest.mark.slow
def test_coop_trains_a_step_on_open_clip(open_clip_file, toy_trainer, small_toy_root, tmp_path):
    _, path = open_clip_file
    trainer = toy_trainer("CoOp", small_toy_root, tmp_path / "out", "base",
                          "DATASET.NUM_SHOTS", "2", "MODEL.BACKBONE.NAME", f"open_clip:{TINY}:{path}",
                          "INPUT.SIZE", "(32, 32)", "DATALOADER.TRAIN_X.BATCH_SIZE", "8")
    ctx = trainer.model.prompt_learner.ctx
    before = ctx.detach().clone()
    trainer.set_model_mode("train")
    batch = next(iter(trainer.train_loader_x))
    summary = trainer.forward_backward(batch)
    assert torch.isfinite(torch.tensor(summary["loss"]))
    assert not torch.equal(before, ctx.detach())


def test_unsupported_architecture_is_named():
    with pytest.raises(OpenCLIPUnsupportedError) as e:
        load_clip("open_clip:ViT-B-16-SigLIP:webli")
    msg = str(e.value)
    assert "vision_cfg.timm_model_name='vit_base_patch16_siglip_224'" in msg
    assert "init_logit_bias=-10" in msg and "text_cfg.pool_type='last'" in msg


def test_offline_missing_weights_name_the_place(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", _offline_hub)
    with pytest.raises(CLIPWeightsNotFoundError) as e:
        load_clip("open_clip:ViT-B-16:laion2b_s34b_b88k", cache_dir=tmp_path / "cache")
    place = tmp_path / "cache" / "open_clip" / "ViT-B-16" / "laion2b_s34b_b88k"
    assert f"place it in {place}/" in str(e.value)
    assert "laion/CLIP-ViT-B-16-laion2B-s34B-b88K" in str(e.value)
    # placing a file there is enough
    place.mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no open_clip state dict"):
        torch.save({}, place / "open_clip_pytorch_model.bin")
        load_clip("open_clip:ViT-B-16:laion2b_s34b_b88k", cache_dir=tmp_path / "cache")


def _offline_hub(*args, **kwargs):
    raise OSError("offline: no connection to the hub")


@pytest.mark.parametrize("name, expected", [
    ("open_clip:ViT-B-16", "open_clip:MODEL:PRETRAINED"),
    ("open_clip:ViT-B-61:x", "did you mean ViT-B-16"),
    ("open_clip:ViT-B-16:nope", "tags: openai, laion400m_e31"),
])
def test_bad_names(name, expected):
    with pytest.raises(ValueError, match=expected):
        load_clip(name)


# ------------------------------------------------------------ OpenAI-style weights as a file
# A tiny stand-in for ViT-B-32 / RN50...: a GELU config, its "-quickgelu" twin, and an "openai"
# tag marked quick_gelu (as open_clip's registry does for every OpenAI model).
OAI = "DasslTest-ViT-TinyOAI"
OAI_QG = f"{OAI}-quickgelu"


@pytest.fixture
def openai_like(tmp_path, monkeypatch):
    """(weights file, cache dir holding the same file as tag ``openai`` of both names)."""
    model = random_open_clip(tmp_path, OAI, TINY_CFG, seed=2)
    (tmp_path / f"{OAI_QG}.json").write_text(json.dumps(dict(TINY_CFG, quick_gelu=True)))
    open_clip.add_model_config(tmp_path)
    tag = {"openai": {"hf_hub": "nowhere/tiny", "quick_gelu": True}}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, OAI, tag)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, OAI_QG, tag)
    path = tmp_path / "tiny_openai.bin"
    torch.save(model.state_dict(), path)
    cache = tmp_path / "cache"
    for name in (OAI, OAI_QG):
        (cache / "open_clip" / name / "openai").mkdir(parents=True)
        torch.save(model.state_dict(), cache / "open_clip" / name / "openai" / "w.bin")
    # open_clip's own handling of the tag reads the same file
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda *a, **k: str(path))
    return path, cache


def features(model):
    torch.manual_seed(1)
    images, text = torch.randn(2, 3, 32, 32), tokenize(["a photo of a red circle.", "x"])
    with torch.no_grad():
        return torch.cat([model.encode_image(images), model.encode_text(text)])


def test_every_name_of_openai_weights_equals_open_clip(openai_like, caplog):
    """Tag folder (plain and -quickgelu name) and file with the -quickgelu name: QuickGELU,
    equal to open_clip's QuickGELU model; file with the plain name: GELU, equal to open_clip's
    create_model(plain, pretrained=file), with a warning naming the -quickgelu name."""
    path, cache = openai_like
    quick = features(open_clip.create_model(OAI_QG, pretrained="openai"))
    assert torch.allclose(quick, features(open_clip.create_model(OAI_QG, pretrained=str(path))))
    assert torch.allclose(quick, features(open_clip.create_model(OAI, pretrained="openai",
                                                                 force_quick_gelu=True)))
    gelu = features(open_clip.create_model(OAI, pretrained=str(path)))
    assert (gelu - quick).abs().max() > 1e-3  # the activation matters on these weights
    for name in (f"{OAI}:openai", f"{OAI_QG}:openai", f"{OAI_QG}:{path}"):
        caplog.clear()
        ours = features(load_clip(f"open_clip:{name}", cache_dir=cache))
        torch.testing.assert_close(ours, quick, atol=1e-5, rtol=0, msg=name)
        assert "a weights file given with model name" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        ours = features(load_clip(f"open_clip:{OAI}:{path}", cache_dir=cache))
    torch.testing.assert_close(ours, gelu, atol=1e-5, rtol=0)
    assert (f"a weights file given with model name {OAI} runs with exact GELU" in caplog.text)
    assert f"name the model {OAI_QG} (open_clip:{OAI_QG}:{path})" in caplog.text


def test_no_quickgelu_warning_without_openai_tag(open_clip_file, caplog):
    _, path = open_clip_file
    with caplog.at_level("WARNING"):
        load_clip(f"open_clip:{TINY}:{path}")
    assert "QuickGELU" not in caplog.text


def test_offline_error_is_printed_whole(tmp_path, monkeypatch):
    long_reason = ("offline: " + "the hub could not be reached, " * 20
                   + "\nsecond line: set HF_HUB_OFFLINE=0 END-OF-REASON")

    def hub(*args, **kwargs):
        raise OSError(long_reason)

    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", hub)
    with pytest.raises(CLIPWeightsNotFoundError) as e:
        load_clip("open_clip:ViT-B-16:laion2b_s34b_b88k", cache_dir=tmp_path / "cache")
    msg = str(e.value)  # open_clip wraps the hub's error; all of it is kept
    assert "or give its path: open_clip:ViT-B-16:/path/to/file. The download failed with: " in msg
    assert msg.endswith("Last error: " + long_reason)
