"""CLIP architectures: dimension inference, equality with open_clip, precision casting."""
import pytest
import torch

from dassl_lite.clip import CLIP, CLIPConfig, build_model, convert_weights, infer_config

open_clip = pytest.importorskip("open_clip")

# OpenAI's published architectures: (open_clip config name, expected inferred config).
PUBLISHED = {
    "RN50": ("RN50", dict(embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3),
                          vision_width=64, vision_patch_size=None, vision_heads=32,
                          transformer_width=512, transformer_heads=8)),
    "RN101": ("RN101", dict(embed_dim=512, image_resolution=224, vision_layers=(3, 4, 23, 3),
                            vision_width=64, vision_patch_size=None, vision_heads=32,
                            transformer_width=512, transformer_heads=8)),
    "RN50x4": ("RN50x4", dict(embed_dim=640, image_resolution=288, vision_layers=(4, 6, 10, 6),
                              vision_width=80, vision_patch_size=None, vision_heads=40,
                              transformer_width=640, transformer_heads=10)),
    "RN50x16": ("RN50x16", dict(embed_dim=768, image_resolution=384, vision_layers=(6, 8, 18, 8),
                                vision_width=96, vision_patch_size=None, vision_heads=48,
                                transformer_width=768, transformer_heads=12)),
    "RN50x64": ("RN50x64", dict(embed_dim=1024, image_resolution=448, vision_layers=(3, 15, 36, 10),
                                vision_width=128, vision_patch_size=None, vision_heads=64,
                                transformer_width=1024, transformer_heads=16)),
    "ViT-B/32": ("ViT-B-32", dict(embed_dim=512, image_resolution=224, vision_layers=12,
                                  vision_width=768, vision_patch_size=32, vision_heads=12,
                                  transformer_width=512, transformer_heads=8)),
    "ViT-B/16": ("ViT-B-16", dict(embed_dim=512, image_resolution=224, vision_layers=12,
                                  vision_width=768, vision_patch_size=16, vision_heads=12,
                                  transformer_width=512, transformer_heads=8)),
    "ViT-L/14": ("ViT-L-14", dict(embed_dim=768, image_resolution=224, vision_layers=24,
                                  vision_width=1024, vision_patch_size=14, vision_heads=16,
                                  transformer_width=768, transformer_heads=12)),
    "ViT-L/14@336px": ("ViT-L-14-336", dict(embed_dim=768, image_resolution=336, vision_layers=24,
                                            vision_width=1024, vision_patch_size=14, vision_heads=16,
                                            transformer_width=768, transformer_heads=12)),
}


def shapes(state_dict):
    return {k: tuple(v.shape) for k, v in state_dict.items()}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_architectures_inferred_from_open_clip_shapes(name):
    config_name, expected = PUBLISHED[name]
    with torch.device("meta"):
        reference = open_clip.model.CLIP(**open_clip.get_model_config(config_name), quick_gelu=True)
    state_dict = reference.state_dict()
    config = infer_config(state_dict)
    assert config == CLIPConfig(context_length=77, vocab_size=49408, transformer_layers=12, **expected)
    with torch.device("meta"):
        ours = CLIP(config)
    assert shapes(ours.state_dict()) == shapes(state_dict)
    visual = ours.visual
    assert (visual.width, visual.heads, visual.output_dim) == (
        config.vision_width, config.vision_heads, config.embed_dim)
    assert visual.layers == config.vision_layers and visual.patch_size == config.vision_patch_size
    assert visual.grid_size == config.image_resolution // (config.vision_patch_size or 32)
    assert (ours.transformer.width, ours.transformer.layers, ours.transformer.heads) == (
        config.transformer_width, 12, config.transformer_heads)


@pytest.mark.parametrize("kind", ["vit", "rn"])
def test_infer_config_of_tiny_models(kind, tiny_configs, request):
    state_dict = request.getfixturevalue(f"{kind}_state_dict")
    assert infer_config(state_dict) == tiny_configs[kind]
    model = request.getfixturevalue(f"{kind}_model")
    assert (model.context_length, model.vocab_size, model.embed_dim) == (77, 49408, 32)
    assert not model.training


def test_infer_config_heads_and_small_widths():
    state_dict = {
        "visual.proj": torch.empty(32, 16, device="meta"),
        "visual.conv1.weight": torch.empty(32, 3, 4, 4, device="meta"),
        "visual.positional_embedding": torch.empty(7 ** 2 + 1, 32, device="meta"),
        "visual.transformer.resblocks.0.attn.in_proj_weight": torch.empty(96, 32, device="meta"),
        "text_projection": torch.empty(48, 16, device="meta"),
        "positional_embedding": torch.empty(20, 48, device="meta"),
        "token_embedding.weight": torch.empty(100, 48, device="meta"),
        "ln_final.weight": torch.empty(48, device="meta"),
        "transformer.resblocks.0.ln_1.weight": torch.empty(48, device="meta"),
        "transformer.resblocks.1.ln_1.weight": torch.empty(48, device="meta"),
    }
    assert infer_config(state_dict) == CLIPConfig(
        embed_dim=16, image_resolution=28, vision_layers=1, vision_width=32, vision_patch_size=4,
        vision_heads=1, context_length=20, vocab_size=100, transformer_width=48,
        transformer_heads=1, transformer_layers=2)


def test_build_model_errors_name_the_problem(vit_state_dict):
    broken = {k: v for k, v in vit_state_dict.items() if k != "ln_final.weight"}
    with pytest.raises(ValueError, match="key 'ln_final.weight' is missing"):
        build_model(broken)
    extra = dict(vit_state_dict, **{"visual.extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="(?s)does not fit the inferred architecture.*Unexpected.*visual.extra"):
        build_model(extra)


def test_build_model_copies_the_given_tensors(vit_state_dict):
    model = build_model(vit_state_dict)
    model.ln_final.weight.data.add_(1.0)
    assert not torch.equal(model.ln_final.weight, vit_state_dict["ln_final.weight"])
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("kind", ["vit", "rn"])
def test_encoders_match_open_clip(kind, request, make_images, text_tokens):
    state_dict = request.getfixturevalue(f"{kind}_state_dict")
    ours = request.getfixturevalue(f"{kind}_model")
    reference = open_clip.model.build_model_from_openai_state_dict(
        dict(state_dict), cast_dtype=None).float().eval()
    images = make_images(ours)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_image(images), reference.encode_image(images),
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.encode_text(text_tokens), reference.encode_text(text_tokens),
                                   rtol=0, atol=1e-5)
        logits, logits_per_text = ours(images, text_tokens)
        image_f, text_f, scale = reference(images, text_tokens)
    torch.testing.assert_close(logits, scale * image_f @ text_f.t(), rtol=0, atol=1e-4)
    assert logits.shape == (3, 4) and torch.equal(logits_per_text, logits.t())


@pytest.mark.parametrize("kind", ["vit", "rn"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_convert_weights_casts_like_openai(kind, dtype, request, make_images, text_tokens):
    state_dict = request.getfixturevalue(f"{kind}_state_dict")
    model = convert_weights(build_model(state_dict), dtype)
    assert model.dtype == dtype and model.text_projection.dtype == dtype
    assert model.ln_final.weight.dtype == torch.float32
    assert model.token_embedding.weight.dtype == torch.float32
    first_block = model.transformer.resblocks[0]
    assert first_block.attn.in_proj_weight.dtype == dtype and first_block.mlp.c_fc.bias.dtype == dtype
    reference = request.getfixturevalue(f"{kind}_model")
    images = make_images(model)
    with torch.no_grad():
        for ours, full in ((model.encode_image(images), reference.encode_image(images)),
                           (model.encode_text(text_tokens), reference.encode_text(text_tokens))):
            assert ours.dtype == dtype
            cosine = torch.nn.functional.cosine_similarity(ours.float(), full, dim=-1)
            assert cosine.min() > 0.99
