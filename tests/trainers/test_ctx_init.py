"""CTX_INIT as upstream: CoOp/CoCoOp learn one vector per *word*, MaPLe/IVLP the first N_CTX BPE
tokens; the rest of the init text stays fixed. Expectations are computed here from the tokenizer
and the token embedding alone, the way upstream's PromptLearner slices them."""
import logging

import pytest
import torch

from dassl_lite.clip import tokenize
from dassl_lite.config import ConfigError
from trainers.cocoop import ConditionalPromptLearner
from trainers.deep_prompts import DeepTextPromptLearner
from trainers.prompting import PromptLearner

NAMES = ["red_circle", "blue"]
INITS = {  # init text -> (learned vectors as upstream CoOp counts them, BPE tokens of the init)
    "itap of a": (3, 4),
    "an x-ray of the": (4, 6),
    "a photo of a": (4, 4),
}


def upstream_coop_parts(clip_model, ctx_init, names, n_ctx):
    """Upstream's slices: ctx = embedding(init)[0, 1:1+n_ctx]; prompts "<init> <name>." with
    prefix = [:, :1] and suffix = [:, 1+n_ctx:] (77 tokens; ours stop after the longest EOT)."""
    init_emb = clip_model.token_embedding(tokenize(ctx_init)).detach()
    tokens = tokenize([f"{ctx_init} {n.replace('_', ' ')}." for n in names])
    emb = clip_model.token_embedding(tokens).detach()
    return init_emb[0, 1:1 + n_ctx], tokens, emb[:, :1], emb[:, 1 + n_ctx:]


@pytest.mark.parametrize("learner_cls", [PromptLearner, ConditionalPromptLearner])
@pytest.mark.parametrize("ctx_init", list(INITS))
def test_coop_rule_counts_words(tiny_clip, learner_cls, ctx_init):
    n_words, n_tokens = INITS[ctx_init]
    assert n_words == len(ctx_init.split(" ")) and n_tokens > 0
    learner = learner_cls(tiny_clip, NAMES, n_ctx=16, ctx_init=ctx_init)
    ctx, tokens, prefix, suffix = upstream_coop_parts(tiny_clip, ctx_init, NAMES, n_words)
    length = learner.tokenized_prompts.shape[1]
    assert learner.n_ctx == n_words and learner.ctx.shape == (n_words, 32)
    assert torch.equal(learner.ctx.data, ctx)
    assert learner.tokenized_prompts.tolist() == tokens[:, :length].tolist()
    assert learner.eot_idx.tolist() == tokens.argmax(-1).tolist()
    assert torch.equal(learner.token_prefix, prefix)
    assert torch.equal(learner.token_suffix, suffix[:, :length - 1 - n_words])
    # the fixed remainder of the init text sits right after the learned vectors
    assert torch.equal(learner.token_suffix[:, :n_tokens - n_words],
                       tiny_clip.token_embedding(tokens[:, 1 + n_words:1 + n_tokens]).detach())


def test_coop_prompt_equals_upstream_prompt_embeddings(tiny_clip):
    learner = PromptLearner(tiny_clip, NAMES, ctx_init="an x-ray of the")
    with torch.no_grad():
        learner.ctx.normal_()
    _, tokens, _, _ = upstream_coop_parts(tiny_clip, "an x-ray of the", NAMES, 4)
    upstream = tiny_clip.token_embedding(tokens).detach().clone()
    upstream[:, 1:5] = learner.ctx.data
    prompts = learner()
    assert torch.equal(prompts, upstream[:, :prompts.shape[1]])


@pytest.mark.parametrize("ctx_init, n_ctx, learned, fixed", [
    ("an x-ray of the", 2, ["an", "x"], ["-", "ray", "of", "the"]),
    ("itap of a", 2, ["it", "ap"], ["of", "a"]),
])
def test_maple_rule_takes_first_n_ctx_tokens_and_says_so(tiny_clip, caplog, ctx_init, n_ctx,
                                                           learned, fixed):
    with caplog.at_level(logging.INFO, logger="trainers.prompting"):
        learner = DeepTextPromptLearner(tiny_clip, NAMES, n_ctx=n_ctx, ctx_init=ctx_init, depth=1)
    ctx, tokens, prefix, suffix = upstream_coop_parts(tiny_clip, ctx_init, NAMES, n_ctx)
    assert learner.n_ctx == n_ctx and torch.equal(learner.ctx.data, ctx)
    assert learner.tokenized_prompts.tolist() == tokens[:, :learner.tokenized_prompts.shape[1]].tolist()
    notes = [r.getMessage() for r in caplog.records if "stay fixed" in r.getMessage()]
    assert len(notes) == 1
    assert f"learned context vectors start from tokens {learned}" in notes[0]
    assert f"tokens {fixed} stay fixed" in notes[0]


def test_split_note_is_logged_once_and_only_when_surprising(tiny_clip, caplog):
    with caplog.at_level(logging.INFO, logger="trainers.prompting"):
        PromptLearner(tiny_clip, NAMES, ctx_init="a photo of a")
        DeepTextPromptLearner(tiny_clip, NAMES, n_ctx=2, ctx_init="a photo of a", depth=1)
    assert not [r for r in caplog.records if "stay fixed" in r.getMessage()]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainers.prompting"):
        PromptLearner(tiny_clip, NAMES, ctx_init="itap of a")
    notes = [r.getMessage() for r in caplog.records if "stay fixed" in r.getMessage()]
    assert notes == ["CTX_INIT 'itap of a': BPE tokens ['it', 'ap', 'of', 'a']; the 3 learned "
                     "context vectors start from tokens ['it', 'ap', 'of'] and tokens ['a'] stay "
                     "fixed in the prompt before the class name (upstream's rule)"]


@pytest.mark.parametrize("ctx_init", ["a photo ", " a photo", "a  photo"])
def test_empty_words_are_an_error(tiny_clip, ctx_init):
    with pytest.raises(ConfigError, match="has an empty word"):
        PromptLearner(tiny_clip, NAMES, ctx_init=ctx_init)


def test_upstream_itap_checkpoint_loads_and_gives_upstream_prompts(build, tmp_path, upstream):
    state = upstream.coop_state(n_ctx=3)  # trained upstream with CTX_INIT "itap of a"
    trainer = build("CoOp", "TRAINER.COOP.CTX_INIT", "itap of a")
    trainer.load_model(upstream.write(tmp_path / "up", state), epoch=50)
    learner = trainer.model.prompt_learner
    assert torch.equal(learner.ctx.data, state["ctx"].float())
    names = trainer.dm.dataset.classnames
    clip_model = trainer.model.clip
    _, tokens, _, _ = upstream_coop_parts(clip_model, "itap of a", names, 3)
    expected = clip_model.token_embedding(tokens).detach().clone()
    expected[:, 1:4] = state["ctx"].float()
    prompts = learner().detach()
    assert torch.equal(prompts, expected[:, :prompts.shape[1]])
