"""Dense-task hooks of the ViT: intermediate block outputs and positional-embedding
interpolation for any input size (the stored model never changes)."""
import copy
import re

import pytest
import torch
import torch.nn.functional as F

from dassl_lite.clip import interpolate_positional_embedding


def manual_block_outputs(visual, images):
    """Independent walk through the blocks: output of every block (1-based list index + 1)."""
    x = visual.ln_pre(visual.embed(images))
    outs = []
    for block in visual.transformer.resblocks:
        x = block(x)
        outs.append(x)
    return outs


def test_forward_features_returns_the_chosen_blocks(vit_model, make_images):
    visual = vit_model.visual
    images = make_images(vit_model, batch=2)
    with torch.no_grad():
        feats = visual.forward_features(images, [3, 1, 2])
        manual = manual_block_outputs(visual, images)
        pooled = visual(images)
    assert feats.grid == (4, 4)
    assert torch.equal(feats.pooled, pooled)
    for got, block in zip(feats.tokens, [3, 1, 2]):
        assert got.shape == (2, 17, 128)
        torch.testing.assert_close(got, manual[block - 1])
    # Each layer's map is its own tensor and differs from the others (AnomalyCLIP #18).
    assert all(not torch.allclose(feats.tokens[i], feats.tokens[j])
               for i in range(3) for j in range(i + 1, 3))
    # CLS through project_tokens is the pooled feature; patches map to the joint space too.
    torch.testing.assert_close(visual.project_tokens(feats.tokens[0][:, 0]), pooled)
    assert visual.project_tokens(feats.tokens[0][:, 1:]).shape == (2, 16, 32)


def test_block_numbers_are_checked(vit_model, make_images):
    images = make_images(vit_model, batch=1)
    with pytest.raises(ValueError, match=re.escape("block numbers must be integers in 1..3 "
                                                   "(1-based: i is the output of block i); got [0, 2]")):
        vit_model.visual.forward_features(images, [0, 2])
    with pytest.raises(ValueError, match=re.escape("got [4]")):
        vit_model.visual.forward_features(images, [4])


def test_forward_features_keeps_prompt_tokens_last(vit_model, make_images):
    visual = vit_model.visual
    images = make_images(vit_model, batch=2)
    prompts = torch.randn(3, visual.width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = visual.forward_features(images, [1], prompts)
        assert torch.equal(feats.pooled, visual(images, prompts))
    assert feats.tokens[0].shape == (2, 1 + 16 + 3, visual.width)


def test_interpolation_function_against_f_interpolate():
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(1 + 16, 8, generator=gen)
    out = interpolate_positional_embedding(pos, (8, 6), "bilinear")
    grid = pos[1:].reshape(4, 4, 8).permute(2, 0, 1)[None]
    expected = F.interpolate(grid, size=(8, 6), mode="bilinear", align_corners=False)
    assert out.shape == (1 + 48, 8)
    assert torch.equal(out[0], pos[0])
    torch.testing.assert_close(out[1:], expected[0].permute(1, 2, 0).reshape(48, 8))
    # A constant grid stays constant under both modes; the same grid returns pos itself.
    const = torch.ones(17, 4)
    for mode in ("bilinear", "bicubic"):
        torch.testing.assert_close(interpolate_positional_embedding(const, (7, 7), mode),
                                   torch.ones(50, 4))
    assert interpolate_positional_embedding(pos, (4, 4)) is pos
    # open_clip's resize_pos_embed: bicubic with antialias=True, another kernel when enlarging too
    aa = interpolate_positional_embedding(pos, (8, 6), "bicubic_antialias")
    expected = F.interpolate(grid, size=(8, 6), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(aa[1:], expected[0].permute(1, 2, 0).reshape(48, 8))
    plain = interpolate_positional_embedding(pos, (8, 6), "bicubic")
    assert (aa[1:] - plain[1:]).abs().max() > 0.05
    with pytest.raises(ValueError, match=re.escape("must be one of ('bilinear', 'bicubic', "
                                                   "'bicubic_antialias'); got 'area'")):
        interpolate_positional_embedding(pos, (8, 8), "area")


def test_any_input_size_without_changing_the_stored_model(vit_model, make_images):
    visual = copy.deepcopy(vit_model.visual)
    before = {k: v.clone() for k, v in visual.state_dict().items()}
    images = make_images(vit_model, batch=2)
    big = F.interpolate(images, size=(64, 48), mode="bilinear", align_corners=False)
    with pytest.raises(ValueError, match=re.escape("expects images of shape [B, 3, 32, 32]; got [2, 3, 64, 48]")):
        visual(big)
    visual.pos_interpolation = "bicubic"
    with torch.no_grad():
        feats = visual.forward_features(big, [2])
        native = visual(images)
    assert feats.grid == (8, 6) and feats.tokens[0].shape == (2, 1 + 48, visual.width)
    assert torch.isfinite(feats.pooled).all()
    torch.testing.assert_close(native, vit_model.visual(images))  # native size: unchanged path
    after = visual.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert visual.positional_embedding.shape == (17, visual.width)
    with pytest.raises(ValueError, match=re.escape("H and W multiples of 8; got [1, 3, 36, 32]")):
        visual(torch.zeros(1, 3, 36, 32))
