"""Supervised ViT loading: one set of weights written as a torchvision state dict, a Google
``.npz`` (key names and shapes of google-research/vision_transformer, written here from the
torchvision tensors) and a timm state dict gives the same class token as torchvision's own
forward; bad files name what is wrong."""
import numpy as np
import pytest
import torch

from dassl_lite.backbones import (ARCHS, PromptableViT, ViTWeightsNotFoundError, build_timm_vit,
                                  load_supervised_vit)
from dassl_lite.errors import DasslLiteError

SIZE, PATCH, WIDTH, DEPTH, HEADS, MLP = 32, 8, 128, 2, 2, 160  # heads = width / 64


def random_torchvision_vit(heads=HEADS):
    """A random torchvision ViT (eval mode) whose forward returns the normalised class token."""
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=SIZE, patch_size=PATCH, num_layers=DEPTH,
                              num_heads=heads, hidden_dim=WIDTH, mlp_dim=MLP, num_classes=10)
    with torch.no_grad():  # torchvision zero-initialises these; make them matter
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias") or name == "class_token":
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def torchvision_vit():
    return random_torchvision_vit()


def google_npz(tv, heads=HEADS) -> dict:
    """The torchvision weights in Google's ViT .npz layout (Flax kernels: [in, ..., out])."""
    sd = {k: v.detach().numpy() for k, v in tv.state_dict().items()}
    hd = WIDTH // heads
    out = {"embedding/kernel": sd["conv_proj.weight"].transpose(2, 3, 1, 0),
           "embedding/bias": sd["conv_proj.bias"], "cls": sd["class_token"],
           "Transformer/posembed_input/pos_embedding": sd["encoder.pos_embedding"],
           "Transformer/encoder_norm/scale": sd["encoder.ln.weight"],
           "Transformer/encoder_norm/bias": sd["encoder.ln.bias"],
           "pre_logits/kernel": np.ones((WIDTH, WIDTH), np.float32),
           "pre_logits/bias": np.zeros(WIDTH, np.float32),
           "head/kernel": sd["heads.head.weight"].T, "head/bias": sd["heads.head.bias"]}
    for i in range(DEPTH):
        tv_block, root = f"encoder.layers.encoder_layer_{i}.", f"Transformer/encoderblock_{i}/"
        att = root + "MultiHeadDotProductAttention_1/"
        qkv_w = np.split(sd[tv_block + "self_attention.in_proj_weight"], 3)
        qkv_b = np.split(sd[tv_block + "self_attention.in_proj_bias"], 3)
        for name, w, b in zip(("query", "key", "value"), qkv_w, qkv_b):
            out[att + name + "/kernel"] = w.T.reshape(WIDTH, heads, hd)
            out[att + name + "/bias"] = b.reshape(heads, hd)
        out[att + "out/kernel"] = sd[tv_block + "self_attention.out_proj.weight"].T.reshape(heads, hd, WIDTH)
        out[att + "out/bias"] = sd[tv_block + "self_attention.out_proj.bias"]
        for dense, layer in (("Dense_0", "0"), ("Dense_1", "3")):
            out[root + f"MlpBlock_3/{dense}/kernel"] = sd[tv_block + f"mlp.{layer}.weight"].T
            out[root + f"MlpBlock_3/{dense}/bias"] = sd[tv_block + f"mlp.{layer}.bias"]
        for ln, tv_ln in (("LayerNorm_0", "ln_1"), ("LayerNorm_2", "ln_2")):
            out[root + ln + "/scale"] = sd[tv_block + tv_ln + ".weight"]
            out[root + ln + "/bias"] = sd[tv_block + tv_ln + ".bias"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference(torchvision_vit, images):
    """torchvision's class token after its final LayerNorm (its forward without the head)."""
    tv = torchvision_vit
    with torch.no_grad():
        x = tv._process_input(images)
        x = torch.cat([tv.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return tv.encoder(x)[:, 0]


def features(path, images, size=SIZE, **prompts):
    model = load_supervised_vit(str(path), size)
    with torch.no_grad():
        return model(images, **prompts)


def test_npz_timm_and_torchvision_files_give_torchvisions_class_token(
        torchvision_vit, images, reference, tmp_path):
    torch.save(torchvision_vit.state_dict(), tmp_path / "tv.pth")
    np.savez(tmp_path / "google.npz", **google_npz(torchvision_vit))
    from_tv = features(tmp_path / "tv.pth", images)
    from_npz = features(tmp_path / "google.npz", images)
    timm_model = load_supervised_vit(str(tmp_path / "google.npz"), SIZE)
    torch.save({"state_dict": timm_model.vit.state_dict()}, tmp_path / "timm.pth")
    from_timm = features(tmp_path / "timm.pth", images)
    assert from_tv.shape == (3, WIDTH)
    torch.testing.assert_close(from_tv, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(from_npz, from_tv, atol=1e-5, rtol=1e-5)
    assert torch.equal(from_timm, from_npz)
    # and timm's own forward agrees with our prompt-free path
    with torch.no_grad():
        assert torch.allclose(timm_model.vit.forward_features(images)[:, 0], from_npz, atol=1e-6)


def test_inferred_architecture_and_resampled_positions(torchvision_vit, tmp_path):
    np.savez(tmp_path / "google.npz", **google_npz(torchvision_vit))
    model = load_supervised_vit(str(tmp_path / "google.npz"), 2 * SIZE)
    assert (model.patch_size, model.width, model.depth, model.arch.heads) == (PATCH, WIDTH, DEPTH, HEADS)
    assert model.vit.pos_embed.shape == (1, 1 + (2 * SIZE // PATCH) ** 2, WIDTH)
    assert model(torch.zeros(1, 3, 2 * SIZE, 2 * SIZE)).shape == (1, WIDTH)


def test_npz_heads_come_from_its_kernels(images, tmp_path):
    """4 heads of width 32 (not width / 64): the .npz tells, and the output matches torchvision."""
    tv = random_torchvision_vit(heads=4)
    np.savez(tmp_path / "heads4.npz", **google_npz(tv, heads=4))
    model = load_supervised_vit(str(tmp_path / "heads4.npz"), SIZE)
    assert model.arch.heads == 4
    with torch.no_grad():
        x = tv._process_input(images)
        expected = tv.encoder(torch.cat([tv.class_token.expand(3, -1, -1), x], 1))[:, 0]
        torch.testing.assert_close(model(images), expected, atol=1e-5, rtol=1e-5)


def test_a_wrong_shape_names_both_shapes(torchvision_vit, tmp_path):
    arrays = google_npz(torchvision_vit)
    key = "Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"
    arrays[key] = np.zeros((WIDTH, MLP + 4), np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DasslLiteError) as info:
        load_supervised_vit(str(tmp_path / "bad.npz"), SIZE)
    assert (f"{key}' has shape ({MLP + 4}, {WIDTH}) but the ViT '{tmp_path}/bad.npz' expects "
            f"({MLP}, {WIDTH}) for 'blocks.1.mlp.fc1.weight'") in str(info.value)


def test_a_missing_named_checkpoint_says_where_to_put_it(tmp_path):
    with pytest.raises(ViTWeightsNotFoundError) as info:
        load_supervised_vit("sup_vitb16_imagenet21k", 224, cache_dir=str(tmp_path))
    message = str(info.value)
    assert f"expected {tmp_path}/imagenet21k_ViT-B_16.npz" in message
    assert "https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz" in message
    with pytest.raises(ViTWeightsNotFoundError, match="Did you mean 'sup_vitb16_imagenet21k'"):
        load_supervised_vit("sup_vitb16_imagenet21", 224)


def test_prompts_sit_after_the_class_token_without_positions(torchvision_vit, tmp_path, images):
    """Shallow prompts change the class token; with no positional embedding on prompts, the
    order of the prompt tokens does not matter; deep prompts replace them at later blocks."""
    torch.save(torchvision_vit.state_dict(), tmp_path / "tv.pth")
    model = load_supervised_vit(str(tmp_path / "tv.pth"), SIZE)
    p = torch.randn(4, WIDTH, generator=torch.Generator().manual_seed(2))
    deep = [torch.randn(4, WIDTH, generator=torch.Generator().manual_seed(3))]
    with torch.no_grad():
        plain, shallow = model(images), model(images, prompts=p)
        assert not torch.allclose(plain, shallow, atol=1e-3)
        torch.testing.assert_close(model(images, prompts=p.flip(0)), shallow, atol=1e-5, rtol=1e-5)
        deeper = model(images, prompts=p, deep_prompts=deep)
        # block 1 sees deep[0] in place of block 0's prompt outputs: compute it by hand
        x = model.embed(images)
        x = model.vit.blocks[0](torch.cat([x[:, :1], p.expand(3, -1, -1), x[:, 1:]], 1))
        x = torch.cat([x[:, :1], deep[0].expand(3, -1, -1), x[:, 5:]], 1)
        torch.testing.assert_close(deeper, model.vit.norm(model.vit.blocks[1](x))[:, 0])
    with pytest.raises(DasslLiteError, match="2 deep prompt sets for a ViT of 2 blocks; at most 1"):
        model(images, prompts=p, deep_prompts=deep * 2)


def test_vit_b16_shapes_build_on_the_meta_device():
    with torch.device("meta"):
        model = PromptableViT(build_timm_vit(ARCHS["ViT-B/16"], 224), ARCHS["ViT-B/16"])
    assert model.vit.pos_embed.shape == (1, 197, 768) and len(model.vit.blocks) == 12
    assert model.vit.blocks[0].attn.num_heads == 12


class _Payload:
    """Unpickling this would create ``marker``: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _cut(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep(len(data))])
    return path


def bad_weight_files(tmp_path, tv):
    """(file, the words its error must hold) for each kind of bad ViT weights file."""
    from safetensors.torch import save_file

    marker = tmp_path / "code_ran"
    state = {k: v.contiguous() for k, v in tv.state_dict().items()}
    pickled = tmp_path / "pickled.pth"
    torch.save({**state, "encoder.pos_embedding": _Payload(marker)}, pickled)
    objects = tmp_path / "objects.npz"
    np.savez(objects, **{"embedding/kernel": np.array([{"x": 1}], dtype=object)})
    safetensors = tmp_path / "cut.safetensors"
    save_file(state, str(safetensors))
    torch.save(state, tmp_path / "cut.pth")
    np.savez(tmp_path / "cut.npz", **google_npz(tv))
    np.save(tmp_path / "single.npy", np.zeros(3))
    return marker, [
        (pickled, ["it needs io.open, which is not plain data (loading it could run code)",
                   "expected a timm/torchvision state dict of tensors saved with torch.save"]),
        (objects, ["it holds object arrays (pickled Python objects, never loaded",
                   "expected a Google ViT .npz (named numeric arrays"]),
        (_cut(safetensors, lambda n: n // 2), ["it is truncated or corrupt (safetensors: ",
                                               "expected a complete .safetensors file of tensors"]),
        (_cut(tmp_path / "cut.pth", lambda n: n - 100),
         ["the file is truncated or corrupt; torch: reading zip archive",
          "expected a timm/torchvision state dict"]),
        (_cut(tmp_path / "cut.npz", lambda n: n // 2),
         ["it is truncated or corrupt (BadZipFile", "expected a Google ViT .npz"]),
        ((tmp_path / "single.npy").rename(tmp_path / "single.npz"),
         ["it holds a single .npy array, not named arrays"]),
    ]


def test_bad_weight_files_are_refused_naming_the_file_and_format(torchvision_vit, tmp_path):
    from dassl_lite.backbones import ViTWeightsFormatError

    marker, cases = bad_weight_files(tmp_path, torchvision_vit)
    for path, words in cases:
        with pytest.raises(ViTWeightsFormatError) as info:
            load_supervised_vit(str(path), SIZE)
        message = str(info.value)
        assert message.startswith(f"Cannot use ViT weights {path}: "), message
        for w in words:
            assert w in message, (path.name, message)
    assert not marker.exists()  # nothing from any file ran


def test_a_state_dict_in_no_known_layout_names_the_file(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(DasslLiteError, match=f"Cannot use ViT weights {path}: not a ViT checkpoint "
                                             r"in a known layout"):
        load_supervised_vit(str(path), SIZE)
