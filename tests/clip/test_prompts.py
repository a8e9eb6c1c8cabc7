"""Prompt-ready encoders: plain-path equality, EOT truncation, deep prompt semantics, errors."""
import copy
import re

import pytest
import torch

from dassl_lite.clip import tokenize

open_clip = pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def reference(vit_state_dict):
    """open_clip's model from the same weights: its blocks drive the upstream-style loops."""
    return open_clip.model.build_model_from_openai_state_dict(
        dict(vit_state_dict), cast_dtype=None).float().eval()


def upstream_text(ref, embeddings, eot_idx, deep):
    """MaPLe's TextEncoder + ResidualAttentionBlock_MaPLe on all 77 positions: deep entry k
    replaces x[:, 1:1+n_ctx] at the input of layer k+1, no positional embedding added."""
    x = embeddings + ref.positional_embedding
    for i, block in enumerate(ref.transformer.resblocks):
        if 1 <= i <= len(deep):
            ctx = deep[i - 1].expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], ctx, x[:, 1 + ctx.shape[1]:]], dim=1)
        x = block(x, attn_mask=ref.attn_mask)
    x = ref.ln_final(x)
    return x[torch.arange(x.shape[0]), eot_idx] @ ref.text_projection


def upstream_vision(ref, images, prompts, deep):
    """MaPLe's VisionTransformer_MaPLe: prompts appended after the positional embedding, ln_pre
    over everything, deep entry k replaces the last n_ctx tokens at the input of layer k+1."""
    v = ref.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + v.positional_embedding
    x = v.ln_pre(torch.cat([x, prompts.expand(x.shape[0], -1, -1)], dim=1))
    n_ctx = prompts.shape[-2]
    for i, block in enumerate(v.transformer.resblocks):
        if 1 <= i <= len(deep):
            x = torch.cat([x[:, :-n_ctx], deep[i - 1].expand(x.shape[0], -1, -1)], dim=1)
        x = block(x)
    return v.ln_post(x[:, 0]) @ v.proj


def record_block_inputs(transformer):
    """Register pre-hooks storing each block's input; returns (inputs list, handles)."""
    inputs = []
    handles = [block.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach()))
               for block in transformer.resblocks]
    return inputs, handles


def prompt(n, width, seed):
    return 0.1 * torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_empty_prompts_equal_plain_paths(vit_model, make_images, text_tokens):
    images = make_images(vit_model)
    plain = vit_model.encode_image(images)
    width = vit_model.visual.width
    assert torch.equal(vit_model.visual(images, prompts=None, deep_prompts=None), plain)
    assert torch.equal(vit_model.visual(images, prompts=torch.empty(0, width), deep_prompts=[]), plain)
    embeddings = vit_model.token_embedding(text_tokens)
    eot = text_tokens.argmax(dim=-1)
    plain_text = vit_model.encode_text(text_tokens)
    assert torch.equal(vit_model.encode_text_embeddings(embeddings, eot), plain_text)
    assert torch.equal(vit_model.encode_text_embeddings(embeddings, eot, deep_prompts=[]), plain_text)


@pytest.mark.parametrize("kind", ["vit", "rn"])
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@torch.no_grad()
def test_eot_truncation_changes_nothing(kind, dtype, atol, request, text_tokens):
    model = copy.deepcopy(request.getfixturevalue(f"{kind}_model")).to(dtype)
    eot = text_tokens.argmax(dim=-1)
    inputs, handles = record_block_inputs(model.transformer)
    # group_size 1: no shared prefix, so every block runs its plain forward on the cut rows
    truncated = model.encode_text_embeddings(model.token_embedding(text_tokens), eot, group_size=1)
    for handle in handles:
        handle.remove()
    assert inputs[0].shape[1] == int(eot.max()) + 1 < 77
    x = model.transformer(model.token_embedding(text_tokens) + model.positional_embedding)
    full = model.ln_final(x[torch.arange(len(x)), eot]) @ model.text_projection
    assert full.dtype == dtype
    torch.testing.assert_close(truncated, full, rtol=0, atol=atol)


@torch.no_grad()
def test_text_deep_prompts_match_upstream(vit_model, reference):
    tokens = tokenize(["X X a photo of a cat.", "X X dog.", "X X a centered satellite photo."])
    eot = tokens.argmax(dim=-1)
    width = vit_model.transformer.width
    embeddings = vit_model.token_embedding(tokens)
    embeddings[:, 1:3] = prompt(2, width, seed=1)  # shallow context spliced after SOS
    deep = [prompt(2, width, seed=2), prompt(2, width, seed=3)]
    ours = vit_model.encode_text_embeddings(embeddings, eot, deep_prompts=deep)
    torch.testing.assert_close(ours, upstream_text(reference, embeddings, eot, deep), rtol=0, atol=1e-5)
    per_row = [d.expand(3, -1, -1).clone() for d in deep]  # per-row prompts: no shared prefix
    torch.testing.assert_close(vit_model.encode_text_embeddings(embeddings, eot, per_row), ours,
                               rtol=0, atol=1e-5)
    shallow_only = vit_model.encode_text_embeddings(embeddings, eot)
    assert not torch.allclose(shallow_only, ours)


@torch.no_grad()
def test_text_deep_prompts_replace_positions_at_layer_inputs(vit_model):
    tokens = tokenize(["X X X a photo of a bird.", ""])  # second row: EOT at 1, inside the prompt
    width = vit_model.transformer.width
    embeddings = vit_model.token_embedding(tokens)
    deep = [prompt(3, width, seed=4)]
    inputs, handles = record_block_inputs(vit_model.transformer)
    vit_model.encode_text_embeddings(embeddings, tokens.argmax(dim=-1), deep)
    for handle in handles:
        handle.remove()
    length = inputs[0].shape[1]
    pos = vit_model.positional_embedding[:length]
    torch.testing.assert_close(inputs[0], embeddings[:, :length] + pos, rtol=0, atol=0)
    assert torch.equal(inputs[1][:, 1:4], deep[0].expand(2, -1, -1))
    assert not torch.equal(inputs[2][:, 1:4], deep[0].expand(2, -1, -1))  # layer 2 keeps layer 1's


@torch.no_grad()
def test_text_deep_prompts_longer_than_truncated_sequence(vit_model, reference):
    tokens = tokenize(["", "a"])  # EOT at 1 and 2: the sequence is cut to 3 positions
    width = vit_model.transformer.width
    embeddings = vit_model.token_embedding(tokens)
    deep = [prompt(4, width, seed=5), prompt(4, width, seed=6)]
    eot = tokens.argmax(dim=-1)
    ours = vit_model.encode_text_embeddings(embeddings, eot, deep)
    torch.testing.assert_close(ours, upstream_text(reference, embeddings, eot, deep), rtol=0, atol=1e-5)


@torch.no_grad()
def test_vision_prompts_match_upstream(vit_model, reference, make_images):
    images = make_images(vit_model, batch=2)
    width = vit_model.visual.width
    shallow = prompt(2, width, seed=7)
    deep = [prompt(2, width, seed=8), prompt(2, width, seed=9)]
    ours = vit_model.visual(images, prompts=shallow, deep_prompts=deep)
    torch.testing.assert_close(ours, upstream_vision(reference, images, shallow, deep), rtol=0, atol=1e-5)
    torch.testing.assert_close(vit_model.visual(images, prompts=shallow),
                               upstream_vision(reference, images, shallow, []), rtol=0, atol=1e-5)
    per_image = vit_model.visual(images, prompts=shallow.expand(2, -1, -1),
                                 deep_prompts=[d.expand(2, -1, -1) for d in deep])
    torch.testing.assert_close(per_image, ours, rtol=0, atol=1e-6)


@torch.no_grad()
def test_vision_deep_prompts_replace_last_tokens_at_layer_inputs(vit_model, make_images):
    images = make_images(vit_model, batch=2)
    visual = vit_model.visual
    shallow, deep = prompt(3, visual.width, seed=10), [prompt(3, visual.width, seed=11)]
    inputs, handles = record_block_inputs(visual.transformer)
    visual(images, prompts=shallow, deep_prompts=deep)
    for handle in handles:
        handle.remove()
    assert inputs[0].shape[1] == 1 + visual.grid_size ** 2 + 3
    torch.testing.assert_close(inputs[0][:, -3:], visual.ln_pre(shallow).expand(2, -1, -1),
                               rtol=0, atol=1e-6)
    assert torch.equal(inputs[1][:, -3:], deep[0].expand(2, -1, -1))
    assert not torch.equal(inputs[2][:, -3:], deep[0].expand(2, -1, -1))


def test_prompt_gradients_flow_to_prompts_of_a_frozen_model(vit_model, make_images, text_tokens):
    model = copy.deepcopy(vit_model).requires_grad_(False)
    width_v, width_t = model.visual.width, model.transformer.width
    shallow_v = prompt(2, width_v, 12).requires_grad_()
    deep_v = [prompt(2, width_v, 13).requires_grad_()]
    deep_t = [prompt(2, width_t, 14).requires_grad_()]
    ctx = prompt(2, width_t, 15).requires_grad_()
    embeddings = model.token_embedding(text_tokens)
    embeddings = torch.cat([embeddings[:, :1], ctx.expand(4, -1, -1), embeddings[:, 3:]], dim=1)
    image_f = model.visual(make_images(model, batch=2), shallow_v, deep_v)
    text_f = model.encode_text_embeddings(embeddings, text_tokens.argmax(-1), deep_t)
    (image_f @ text_f.t()).sum().backward()
    for tensor in (shallow_v, deep_v[0], deep_t[0], ctx):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_prompt_errors(vit_model, make_images, text_tokens):
    images = make_images(vit_model, batch=2)
    visual, width = vit_model.visual, vit_model.visual.width
    with pytest.raises(ValueError, match=re.escape("at most 2 deep prompts fit a 3-layer transformer")):
        visual(images, prompt(1, width, 0), [prompt(1, width, 0)] * 3)
    with pytest.raises(ValueError, match=re.escape("vision deep_prompts[0] must replace the 0 shallow")):
        visual(images, None, [prompt(1, width, 0)])
    with pytest.raises(ValueError, match=re.escape("must replace the 2 shallow prompt tokens")):
        visual(images, prompt(2, width, 0), [prompt(3, width, 0)])
    with pytest.raises(ValueError, match=re.escape(f"prompts must have shape [n_ctx, {width}]")):
        visual(images, prompt(2, width + 1, 0))
    with pytest.raises(ValueError, match=re.escape("expects images of shape [B, 3, 32, 32]; got [2, 3, 64, 64]")):
        visual(torch.zeros(2, 3, 64, 64))
    embeddings = vit_model.token_embedding(text_tokens)
    with pytest.raises(ValueError, match=re.escape("eot_idx must be an integer tensor of shape [4]")):
        vit_model.encode_text_embeddings(embeddings, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=re.escape("eot_idx must lie in [0, 9] (the sequence length); got values 3 to 12")):
        vit_model.encode_text_embeddings(embeddings[:, :10], torch.tensor([3, 12, 4, 5]))
    with pytest.raises(ValueError, match=re.escape("text embeddings must have shape [N, L<=77, 128]")):
        vit_model.encode_text_embeddings(embeddings[..., :64], text_tokens.argmax(-1))


def test_resnet_rejects_vision_prompts(rn_model, make_images):
    images = make_images(rn_model, batch=1)
    expected = ("vision prompts need a ViT backbone (e.g. ViT-B/16); this model's image encoder is a "
                "ModifiedResNet (RN50-style, layers=(1, 2, 1, 1), width=16), which has no token "
                "sequence to prompt")
    with pytest.raises(ValueError, match=re.escape(expected)):
        rn_model.visual(images, prompts=torch.zeros(2, 64))
    with pytest.raises(ValueError, match=re.escape(expected)):
        rn_model.visual(images, deep_prompts=[torch.zeros(2, 64)])
    with torch.no_grad():
        assert torch.equal(rn_model.visual(images, prompts=torch.empty(0, 64)), rn_model.encode_image(images))


def _rows_with_shared_prefix(model, n_groups, per_group, shared, length, dtype, seed=0):
    """Embeddings [G * M, length, width]: the first ``shared`` positions equal within each group
    (drawn once per group, as a leaf to differentiate), the others per row."""
    g = torch.Generator().manual_seed(seed)
    width = model.transformer.width
    prefix = (0.1 * torch.randn(n_groups, shared, width, generator=g, dtype=dtype)).requires_grad_()
    rest = 0.1 * torch.randn(n_groups * per_group, length - shared, width, generator=g, dtype=dtype)
    rows = prefix.repeat_interleave(per_group, dim=0)
    eot = torch.randint(shared, length, (n_groups * per_group,), generator=g)
    eot[0] = length - 1
    return torch.cat([rows, rest], dim=1), prefix, eot


@pytest.mark.parametrize("n_groups, deep", [(1, False), (1, True), (3, False)])
def test_shared_prefix_equals_whole_rows_values_and_gradients(vit_model, n_groups, deep):
    """SOT + context shared by every class (CoOp; per image for CoCoOp: 3 groups): computed
    once per group, the features and the context's gradient equal those of the whole rows."""
    from dassl_lite.clip.model import shared_prefix_length

    model = copy.deepcopy(vit_model).double()
    x, prefix, eot = _rows_with_shared_prefix(model, n_groups, 5, 4, 11, torch.float64)
    width = model.transformer.width
    prompts = [prompt(3, width, seed=s).double() for s in (4, 5)] if deep else None
    assert shared_prefix_length(x, 5, int(eot.min()), prompts) == 4
    shared = model.encode_text_embeddings(x, eot, prompts, group_size=5)
    whole = model.encode_text_embeddings(x, eot, prompts, group_size=1)
    torch.testing.assert_close(shared, whole, rtol=0, atol=1e-12)
    (g_shared,) = torch.autograd.grad(shared.square().sum(), prefix)
    (g_whole,) = torch.autograd.grad(whole.square().sum(), prefix)
    assert g_whole.abs().max() > 1e-3
    torch.testing.assert_close(g_shared, g_whole, rtol=0, atol=1e-12)


def test_shared_prefix_length_and_when_it_does_not_apply(vit_model):
    from dassl_lite.clip.model import shared_prefix_length

    x, _, eot = _rows_with_shared_prefix(vit_model, 2, 4, 5, 9, torch.float32)
    x = x.detach()
    width = vit_model.transformer.width
    assert shared_prefix_length(x, 4, 8) == 5
    assert shared_prefix_length(x, 8, 8) == 0  # the two groups differ from position 0
    assert shared_prefix_length(x, 4, 3) == 3  # never past the first EOT
    assert shared_prefix_length(x, 1, 8) == 0  # one row per group: nothing to share
    assert shared_prefix_length(x, 3, 8) == 0  # 8 rows are not groups of 3
    assert shared_prefix_length(x, 4, 8, [prompt(4, width, 1)]) == 5  # positions 1..4: inside
    assert shared_prefix_length(x, 4, 8, [prompt(5, width, 1)]) == 0  # 1..5 reaches past it
    assert shared_prefix_length(x, 4, 8, [prompt(2, width, 1).expand(8, -1, -1)]) == 0  # per row
    with pytest.raises(ValueError, match="causal"):
        vit_model.visual.transformer.forward_at(torch.zeros(4, 3, 128), torch.ones(4).long(), 1, 4)


def test_shared_prefix_is_off_under_active_dropout_and_on_with_lora(vit_model):
    """LoRA's attention shares the prefix too; while its dropout is active the rows are encoded
    whole (one mask per row, as upstream), in eval mode they are shared again."""
    from trainers.lora import add_lora

    model = copy.deepcopy(vit_model)
    x, _, eot = _rows_with_shared_prefix(model, 1, 4, 5, 9, torch.float32)
    x = x.detach()
    add_lora(model.transformer, [0, 1], ["q", "v"], r=2, alpha=1.0, dropout=0.5)
    model.eval()
    assert model.transformer.can_share_prefix()
    model.train()
    assert not model.transformer.can_share_prefix()
    model.eval()
    torch.testing.assert_close(model.encode_text_embeddings(x, eot),
                               model.encode_text_embeddings(x, eot, group_size=1), rtol=0, atol=1e-5)
    assert not vit_model.visual.transformer.can_share_prefix()  # not causal


def _whole_rows_reference(model, x, eot, deep):
    """Every block on every position (Transformer.forward), then the feature read at EOT."""
    length = int(eot.max()) + 1
    h = x[:, :length] + model.positional_embedding[:length]
    h = model.transformer(h, deep, prompt_start=1)[torch.arange(x.shape[0]), eot]
    return model.ln_final(h) @ model.text_projection


@pytest.mark.parametrize("n_groups, group_size, deep", [(1, 5, False), (1, 5, True), (3, 5, False),
                                                        (1, 1, False), (1, 1, True)])
def test_last_layer_at_eot_only_equals_whole_rows_values_and_gradients(vit_model, n_groups,
                                                                       group_size, deep):
    """The last block attends from EOT and runs its MLP there only (with and without a shared
    prefix, with deep prompts entering every later layer, the last included): features and the
    gradients of the prefix and of the deep prompts equal those of every block on whole rows."""
    model = copy.deepcopy(vit_model).double()
    x, prefix, eot = _rows_with_shared_prefix(model, n_groups, 5, 4, 11, torch.float64, seed=3)
    width, layers = model.transformer.width, model.transformer.layers
    prompts = ([prompt(3, width, seed=s).double().requires_grad_() for s in range(layers - 1)]
               if deep else None)
    leaves = [prefix] + (prompts or [])
    ours = model.encode_text_embeddings(x, eot, prompts, group_size=group_size)
    whole = _whole_rows_reference(model, x, eot, prompts)
    torch.testing.assert_close(ours, whole, rtol=0, atol=1e-12)
    g_ours = torch.autograd.grad(ours.square().sum(), leaves)
    g_whole = torch.autograd.grad(whole.square().sum(), leaves)
    for a, b in zip(g_ours, g_whole):
        assert b.abs().max() > 1e-4
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_blocks_with_forward_hooks_run_whole(vit_model):
    """A forward hook on a text block sees that block's whole input, the last block's included:
    while any hook is registered, no position is skipped or shared."""
    model = copy.deepcopy(vit_model)
    x, _, eot = _rows_with_shared_prefix(model, 1, 4, 5, 9, torch.float32)
    x = x.detach()
    assert model.transformer.can_share_prefix()
    expected = model.encode_text_embeddings(x, eot)
    seen = []
    handle = model.transformer.resblocks[-1].register_forward_hook(
        lambda _m, args, out: seen.append((args[0].shape, out.shape)))
    assert not model.transformer.can_share_prefix()
    with torch.no_grad():
        got = model.encode_text_embeddings(x, eot)
    handle.remove()
    assert seen == [(torch.Size([4, 9, 128]), torch.Size([4, 9, 128]))]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert model.transformer.can_share_prefix()
    handle = model.transformer.resblocks[0].mlp.register_full_backward_hook(lambda *a: None)
    assert not model.transformer.can_share_prefix()  # backward hooks too
    handle.remove()
    assert model.transformer.can_share_prefix()
