"""Prompt construction and the batched encoders, against independent full-length references."""
import pytest
import torch

from dassl_lite.clip import tokenize
from dassl_lite.config import ConfigError
from trainers.cocoop import CoCoOpCLIP, ConditionalPromptLearner
from trainers.coop import CoOpCLIP
from trainers.prompting import PromptLearner
from trainers.zsclip import ZeroshotCLIPModel

SOS, EOT, X, DOT = 49406, 49407, 343, 269
RED, CIRCLE, BLUE = 736, 7117, 1746  # "red circle" is two tokens, "blue" one
LAYOUTS = {
    "end": [[SOS, X, X, X, X, RED, CIRCLE, DOT, EOT], [SOS, X, X, X, X, BLUE, DOT, EOT, 0]],
    "front": [[SOS, RED, CIRCLE, X, X, X, X, DOT, EOT], [SOS, BLUE, X, X, X, X, DOT, EOT, 0]],
    "middle": [[SOS, X, X, RED, CIRCLE, X, X, DOT, EOT], [SOS, X, X, BLUE, X, X, DOT, EOT, 0]],
}


@pytest.mark.parametrize("csc", [False, True])
@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_token_layout_and_embeddings(tiny_clip, position, csc):
    torch.manual_seed(0)
    learner = PromptLearner(tiny_clip, ["red_circle", "blue"], n_ctx=4, csc=csc,
                            class_token_position=position)
    assert learner.tokenized_prompts.tolist() == LAYOUTS[position]
    assert learner.eot_idx.tolist() == [8, 7]
    prompts = learner()
    assert prompts.shape == (2, 9, 32)
    ids = learner.tokenized_prompts
    is_ctx = ids == X
    expected = tiny_clip.token_embedding(ids).detach()
    assert torch.equal(prompts[~is_ctx], expected[~is_ctx])
    ctx = learner.ctx if csc else learner.ctx.expand(2, -1, -1)
    for c in range(2):  # context vectors in order at the "X" positions of each class
        assert torch.equal(prompts[c][is_ctx[c]], ctx[c])


def test_ctx_init_sets_n_ctx_from_tokens_and_words_embeddings(tiny_clip):
    learner = PromptLearner(tiny_clip, ["red_circle"], n_ctx=16, ctx_init="a_photo of a")
    assert learner.n_ctx == 4 and learner.ctx.shape == (4, 32)
    assert learner.tokenized_prompts.tolist() == [[SOS, 320, 1125, 539, 320, RED, CIRCLE, DOT, EOT]]
    words = tiny_clip.token_embedding(torch.tensor([320, 1125, 539, 320]))
    assert torch.equal(learner.ctx.data, words.detach())
    assert torch.equal(learner()[0], tiny_clip.token_embedding(learner.tokenized_prompts[0]).detach())


def test_csc_with_ctx_init_gives_one_context_per_class(tiny_clip):
    learner = PromptLearner(tiny_clip, ["red", "blue", "green"], ctx_init="a photo of a", csc=True)
    assert learner.ctx.shape == (3, 4, 32)
    assert torch.equal(learner.ctx[0], learner.ctx[2])


def test_random_init_statistics_and_buffers_not_saved(tiny_clip):
    torch.manual_seed(0)
    learner = PromptLearner(tiny_clip, [f"class {i}" for i in range(50)], n_ctx=16, csc=True)
    assert learner.ctx.dtype == torch.float32
    assert abs(learner.ctx.std().item() - 0.02) < 0.001 and abs(learner.ctx.mean().item()) < 0.001
    assert list(learner.state_dict()) == ["ctx"]


def test_bad_position_is_an_error(tiny_clip):
    with pytest.raises(ConfigError, match="class token position must be one of end, middle, "
                                          "front; got 'back'"):
        PromptLearner(tiny_clip, ["red"], class_token_position="back")


def reference_text_features(clip_model, ctx, names, n_ctx):
    """Upstream's way: full 77-token prompts with ctx spliced after SOS, EOT by argmax."""
    tokens = tokenize([" ".join(["X"] * n_ctx) + f" {n}." for n in names])
    emb = clip_model.token_embedding(tokens).clone()
    emb[:, 1:1 + n_ctx] = ctx
    x = emb + clip_model.positional_embedding
    x = clip_model.ln_final(clip_model.transformer(x))
    feats = x[torch.arange(len(names)), tokens.argmax(-1)] @ clip_model.text_projection
    return feats / feats.norm(dim=-1, keepdim=True)


def test_coop_text_features_equal_full_length_reference(tiny_clip):
    names = ["red circle", "blue", "a very long class name indeed"]
    model = CoOpCLIP(tiny_clip, PromptLearner(tiny_clip, names, n_ctx=4))
    with torch.no_grad():
        ours = model.text_features()
        ref = reference_text_features(tiny_clip, model.prompt_learner.ctx, names, 4)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_cocoop_batched_encoding_equals_per_image_loop(tiny_clip):
    torch.manual_seed(0)
    names = ["red circle", "blue", "green", "yellow star"]
    learner = ConditionalPromptLearner(tiny_clip, names, n_ctx=4)
    model = CoCoOpCLIP(tiny_clip, learner)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits = model(images)
        rows = []
        for image in images:  # upstream's loop: one image, its C prompts, its logits row
            f = tiny_clip.encode_image(image[None])
            f = f / f.norm(dim=-1, keepdim=True)
            ctx_i = learner.ctx + learner.meta_net(f)
            text = reference_text_features(tiny_clip, ctx_i, names, 4)
            rows.append(tiny_clip.logit_scale.exp() * f[0] @ text.t())
    assert logits.shape == (3, 4)
    torch.testing.assert_close(logits, torch.stack(rows), rtol=1e-4, atol=1e-4)


def test_cocoop_chunked_encoding_is_exact(tiny_clip, monkeypatch):
    torch.manual_seed(0)
    model = CoCoOpCLIP(tiny_clip, ConditionalPromptLearner(tiny_clip, ["a", "b", "c"], n_ctx=2))
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        whole = model(images)
        monkeypatch.setattr("trainers.prompting.TEXT_CHUNK", 5)  # 12 prompts -> 3 calls
        calls = []
        encode = tiny_clip.encode_text_embeddings
        monkeypatch.setattr(tiny_clip, "encode_text_embeddings",
                            lambda *a, **k: calls.append(a[0].shape[0]) or encode(*a, **k))
        chunked = model(images)
    assert calls == [3, 3, 3, 3]  # whole images' groups of 3 class prompts, at most 5 rows
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)


def test_zero_shot_features_single_template_and_ensemble(tiny_clip):
    names = ["red_circle", "blue"]

    def upstream(template):  # CoOp's zsclip: encode_text on tokenized prompts, normalised
        f = tiny_clip.encode_text(tokenize([template.format(n.replace("_", " ")) for n in names]))
        return f / f.norm(dim=-1, keepdim=True)

    with torch.no_grad():
        single = ZeroshotCLIPModel(tiny_clip, names, ["a photo of a {}."]).text_features()
        torch.testing.assert_close(single, upstream("a photo of a {}."), rtol=1e-5, atol=1e-5)
        templates = ["itap of a {}.", "a {} in a video game.", "art of the {}."]
        ensemble = ZeroshotCLIPModel(tiny_clip, names, templates).text_features()
        mean = torch.stack([upstream(t) for t in templates]).mean(0)
        torch.testing.assert_close(ensemble, mean / mean.norm(dim=-1, keepdim=True),
                                   rtol=1e-5, atol=1e-5)
