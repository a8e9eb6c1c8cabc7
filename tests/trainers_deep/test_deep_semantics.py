"""Deep prompt numerics against an independent reference: full 77-token text prompts and an
explicit loop over the CLIP blocks that splices the prompts in, as upstream MaPLe/IVLP/VPT do."""
import math

import pytest
import torch
import torch.nn.functional as F

from dassl_lite.clip import tokenize
from dassl_lite.config import ConfigError
from trainers.deep_prompts import DeepTextPromptLearner

NAMES = ["red", "green", "blue", "yellow"]  # TinyColors, sorted by label
SOS, EOT, DOT, A, PHOTO, OF = 49406, 49407, 269, 320, 1125, 539


def ref_text(clip, prefix, n_ctx, ctx, deep):
    """Text features of ``"<prefix> <name>."`` (77 tokens) with ctx at 1:1+n and deep prompt
    k replacing those positions at the input of layer k+1."""
    tokens = tokenize([f"{prefix} {n}." for n in NAMES])
    x = clip.token_embedding(tokens).clone()
    x[:, 1:1 + n_ctx] = ctx
    x = x + clip.positional_embedding
    for i, block in enumerate(clip.transformer.resblocks):
        if 1 <= i <= len(deep):
            x = torch.cat([x[:, :1], deep[i - 1].expand(len(NAMES), -1, -1), x[:, 1 + n_ctx:]], 1)
        x = block(x)
    x = clip.ln_final(x)[torch.arange(len(NAMES)), tokens.argmax(-1)] @ clip.text_projection
    return F.normalize(x, dim=-1)


def ref_image(clip, images, shallow, deep, after_cls=False):
    """Image features with prompts joined after the positional embedding (at the end, or right
    after CLS as in the VPT paper), replaced at the input of layers 1..len(deep)."""
    v = clip.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(len(images), 1, -1), x], 1) + v.positional_embedding
    n = shallow.shape[-2]

    def join(x, p):
        p = p.expand(len(images), -1, -1)
        return torch.cat([x[:, :1], p, x[:, 1:]], 1) if after_cls else torch.cat([x, p], 1)

    def replace(x, p):
        rest = torch.cat([x[:, :1], x[:, 1 + n:]], 1) if after_cls else x[:, :-n]
        return join(rest, p)

    x = v.ln_pre(join(x, shallow))
    for i, block in enumerate(v.transformer.resblocks):
        if 1 <= i <= len(deep):
            x = replace(x, deep[i - 1])
        x = block(x)
    return F.normalize(v.ln_post(x[:, 0]) @ v.proj, dim=-1)


def logits(clip, img, text):
    return clip.logit_scale.exp() * img @ text.t()


@pytest.fixture
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def eval_model(trainer):
    trainer.set_model_mode("eval")
    return trainer.model


@torch.no_grad()
def test_maple_equals_reference(build, images):
    model = eval_model(build("MaPLe"))
    pl, clip = model.prompt_learner, model.clip
    deep_t = list(pl.compound_prompts_text)
    deep_v = [proj(p) for proj, p in zip(pl.compound_prompt_projections, deep_t)]
    assert len(deep_t) == 2 and pl.ctx.shape == (2, 32) and deep_v[0].shape == (2, 48)
    text = ref_text(clip, "a photo of a", 2, pl.ctx, deep_t)
    img = ref_image(clip, images, pl.proj(pl.ctx), deep_v)
    torch.testing.assert_close(model(images), logits(clip, img, text), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_maple_prompts_replace_previous_layer_tokens(build, images, monkeypatch):
    """Layer k (1 <= k < J) gets compound prompt k-1 in place of the previous layer's prompt
    outputs, in both towers; from layer J on, the prompt tokens flow on (text rows encoded
    whole, without the shared-prefix path, so that every block's forward sees them)."""
    monkeypatch.setattr("dassl_lite.clip.model.shared_prefix_length", lambda *a, **k: 0)
    model = eval_model(build("MaPLe"))
    pl, clip = model.prompt_learner, model.clip
    seen = {}

    def capture(tower, i):
        def hook(module, inputs, output):
            seen[tower, i] = (inputs[0], output)
        return hook

    for tower, blocks in (("text", clip.transformer.resblocks),
                          ("vision", clip.visual.transformer.resblocks)):
        for i, block in enumerate(blocks):
            block.register_forward_hook(capture(tower, i))
    model(images)
    for k in (1, 2):
        p = pl.compound_prompts_text[k - 1]
        text_in = seen["text", k][0]
        assert torch.equal(text_in[:, 1:3], p.expand(4, -1, -1))
        assert torch.equal(text_in[:, 3:], seen["text", k - 1][1][:, 3:])
        vis_in = seen["vision", k][0]
        proj = pl.compound_prompt_projections[k - 1](p)
        assert torch.equal(vis_in[:, -2:], proj.expand(3, -1, -1))
        assert torch.equal(vis_in[:, :-2], seen["vision", k - 1][1][:, :-2])
    # J = 3 < 4 text layers: layer 3 sees layer 2's outputs at the prompt positions
    assert torch.equal(seen["text", 3][0], seen["text", 2][1])


def test_maple_projections_start_as_clones_and_differ_from_proj(build):
    pl = build("MaPLe").model.prompt_learner
    a, b = pl.compound_prompt_projections
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert a.weight is not b.weight and not torch.equal(a.weight, pl.proj.weight)


@torch.no_grad()
@pytest.mark.parametrize("opts, text_depth, vision_depth", [
    ((), 4, 2),
    (("TRAINER.IVLP.PROMPT_DEPTH_VISION", "0"), 4, 0),
    (("TRAINER.IVLP.PROMPT_DEPTH_TEXT", "0"), 0, 2),
])
def test_ivlp_equals_reference(build, images, opts, text_depth, vision_depth):
    model = eval_model(build("IVLP", *opts))
    pl, clip = model.prompt_learner, model.clip
    if text_depth:
        text = ref_text(clip, "a photo of a", 2, pl.text.ctx, list(pl.text.deep))
    else:  # fixed hand-crafted prompts
        text = ref_text(clip, "a photo of a", 0, torch.empty(0, 32), [])
        assert pl.text is None
    if vision_depth:
        img = ref_image(clip, images, pl.vision.ctx, list(pl.vision.deep))
    else:
        img = F.normalize(clip.encode_image(images), dim=-1)
        assert pl.vision is None
    torch.testing.assert_close(model(images), logits(clip, img, text), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_vpt_equals_reference_with_fixed_text(build, images):
    model = eval_model(build("VPT", "TRAINER.VPT.CTX_INIT", "a blurry photo of"))
    pl, clip = model.prompt_learner, model.clip
    text = ref_text(clip, "a blurry photo of", 0, torch.empty(0, 32), [])
    img = ref_image(clip, images, pl.ctx, list(pl.deep))
    torch.testing.assert_close(model(images), logits(clip, img, text), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_vpt_deep_prompts_after_cls_give_the_same_output(build, images):
    """The VPT paper's [CLS, P, patches] and our [CLS, patches, P] give the same class token."""
    model = eval_model(build("VPTDeep"))
    pl, clip = model.prompt_learner, model.clip
    assert pl.deep.shape == (2, 3, 48)  # DEPTH -1: all 3 layers
    paper = ref_image(clip, images, pl.ctx, list(pl.deep), after_cls=True)
    ours = ref_image(clip, images, pl.ctx, list(pl.deep))
    torch.testing.assert_close(paper, ours, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.image_features(images), paper, rtol=1e-5, atol=1e-5)


def test_vpt_deep_uniform_init_and_prompt_dropout(build):
    trainer = build("VPTDeep", "TRAINER.VPTDEEP.DROPOUT", "0.5")
    pl = trainer.model.prompt_learner
    bound = math.sqrt(6 / (3 * 16 * 16 + 48))  # patch 16, width 48
    values = torch.cat([pl.ctx.flatten(), pl.deep.flatten()])
    assert values.abs().max() <= bound and values.abs().max() > 0.95 * bound
    assert abs(values.mean().item()) < 0.1 * bound
    trainer.set_model_mode("train")
    inputs = pl.vision_inputs(batch=4)
    shallow = inputs["prompts"]
    assert shallow.shape == (4, 3, 48) and len(inputs["deep_prompts"]) == 2
    dropped = shallow == 0
    assert 0.3 < dropped.float().mean() < 0.7  # per value, about the rate
    assert not torch.equal(dropped[0], dropped[1])  # each image its own mask
    kept = ~dropped
    torch.testing.assert_close(shallow[kept], (pl.ctx.expand(4, -1, -1) * 2)[kept])
    trainer.set_model_mode("eval")
    assert torch.equal(pl.vision_inputs(batch=4)["prompts"], pl.ctx)  # no dropout in eval


def test_vpt_deep_projection_init(build):
    trainer = build("VPTDeep", "TRAINER.VPTDEEP.PROJECT", "16")
    pl = trainer.model.prompt_learner
    bound = math.sqrt(6 / (3 * 16 * 16 + 16))  # prompt_dim = PROJECT
    assert pl.ctx.shape == (3, 16) and pl.ctx.abs().max() <= bound
    assert pl.proj.weight.shape == (48, 16)
    assert abs(pl.proj.weight.std().item() - math.sqrt(2 / 48)) < 0.03  # Kaiming, fan-out 48
    trainer.set_model_mode("eval")
    assert torch.equal(pl.vision_inputs(batch=2)["prompts"], pl.proj(pl.ctx))


def test_text_context_initialisation_as_upstream(deep_clip):
    learner = DeepTextPromptLearner(deep_clip, ["red"], n_ctx=2, ctx_init="a photo of a", depth=3)
    # "a photo" is learned, "of a" stays in the prompt: SOS a photo of a red . EOT
    assert learner.tokenized_prompts.tolist() == [[SOS, A, PHOTO, OF, A, 736, DOT, EOT]]
    words = deep_clip.token_embedding(torch.tensor([A, PHOTO])).detach()
    assert torch.equal(learner.ctx.data, words) and learner.deep.shape == (2, 2, 32)
    torch.manual_seed(0)
    random = DeepTextPromptLearner(deep_clip, ["red"], n_ctx=6, ctx_init="a photo of a", depth=1)
    assert random.n_ctx == 6 and random.deep is None  # N_CTX > 4: random, "X" placeholders
    assert random.tokenized_prompts[0, 1:7].tolist() == [343] * 6
    with pytest.raises(ConfigError, match=r"must lie in \[1, 2\] \(the BPE tokens of CTX_INIT "
                                          r"'a photo'\) to initialise from it; got 3"):
        DeepTextPromptLearner(deep_clip, ["red"], n_ctx=3, ctx_init="a photo", depth=1)
