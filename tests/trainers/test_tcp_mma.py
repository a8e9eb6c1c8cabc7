"""TCP and MMA on the tiny CLIP (2 layers per encoder, width 32): the forward and the loss against
independent computations with the plain CLIP blocks (TCP's class-aware tokens at one text layer,
MMA's adapter branches and their gradient scaling), upstream checkpoint layouts, config errors,
upstream YAMLs."""
import os

import pytest
import torch
import torch.nn.functional as F

from dassl_lite.clip import tokenize
from dassl_lite.config import ConfigError, apply_config_extenders, get_cfg_default, merge_from_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NO_CACHE = ["DATALOADER.FEATURE_CACHE.ENABLED", "False"]
MMA_OPTS = ["TRAINER.MMADAPTER.ADAPTER_START", "1", "TRAINER.MMADAPTER.ADAPTER_END", "2",
            "TRAINER.MMADAPTER.ADAPTER_DIM", "8", "TRAINER.MMADAPTER.ADAPTER_SCALE", "0.5",
            "TRAINER.MMADAPTER.TEXT_CTX_INIT", "a photo of a"]


@pytest.fixture
def make(clip_cfg, tiny_clip_path, build_seeded):
    """``make(TRAINER, KEY, VALUE, ...)``: a seeded trainer on the tiny CLIP."""
    def _make(trainer, *opts, output_dir=None):
        base = ["TRAINER.TCP.CLASS_PROMPT_LAYER", "1"] if trainer == "TCP" else MMA_OPTS
        return build_seeded(clip_cfg(trainer, tiny_clip_path, *base, *opts, output_dir=output_dir))
    return _make


def text_by_hand(clip, x, eot, edits=()):
    """Plain text encoder on embeddings ``x`` [C, L, w]; ``edits``: {block: fn(block, x) -> x}
    applied around the blocks (see callers)."""
    x = x + clip.positional_embedding[:x.shape[1]]
    for i, block in enumerate(clip.transformer.resblocks):
        x = dict(edits).get(("in", i), lambda b, v: v)(block, x)
        x = dict(edits).get(("out", i), lambda b, v, o: o)(block, x, block(x))
    x = clip.ln_final(x[torch.arange(x.shape[0]), eot]) @ clip.text_projection
    return F.normalize(x, dim=-1)


def test_tcp_step_by_hand(make):
    trainer = make("TCP", "TRAINER.TCP.W", "8.0", *NO_CACHE)
    model, clip = trainer.model, trainer.model.clip
    learner = model.prompt_learner
    names = [n.replace("_", " ") for n in trainer.dm.dataset.classnames]
    batch = next(iter(trainer.train_loader_x))
    with torch.no_grad():
        learner.meta_net.linear2.bias.normal_()  # class-aware tokens far from the context
        hand = F.normalize(clip.encode_text(tokenize([f"a photo of a {n}." for n in names])), dim=-1)
        tokens = tokenize([f"X X X X {n}." for n in names])
        x = clip.token_embedding(tokens)
        x[:, 1:5] = learner.ctx
        class_tokens = learner.meta_net(hand).reshape(len(names), 4, -1)

        def insert(block, v):  # at the input of block 1 (0-based), positions 1..4
            return torch.cat([v[:, :1], class_tokens, v[:, 5:]], dim=1)
        text = text_by_hand(clip, x, tokens.argmax(-1), {("in", 1): insert}.items())
        image = F.normalize(clip.visual(batch["img"]), dim=-1)
        logits = clip.logit_scale.exp() * image @ text.t()
        kg = 1 - (text * hand).sum(-1).mean()
        ce = F.cross_entropy(logits, batch["label"])
        assert torch.allclose(model.text_features(), text, atol=1e-5)
        without = text_by_hand(clip, x, tokens.argmax(-1))
        assert (without - text).abs().max() > 1e-2  # the insertion matters
    trainer.set_model_mode("train")
    out = trainer.forward_backward(batch)
    assert out["ce"] == pytest.approx(ce.item(), rel=1e-5)
    assert out["kg"] == pytest.approx(kg.item(), rel=1e-4, abs=1e-6)
    assert out["loss"] == pytest.approx(ce.item() + 8.0 * kg.item(), rel=1e-5)
    assert kg.item() > 1e-3


def test_tcp_errors_checkpoint_and_configs(make, tmp_path, upstream):
    with pytest.raises(ConfigError, match=r"CLASS_PROMPT_LAYER=2 is not a block of .*2-layer "
                                          r"text encoder; use 1 \.\. 1"):
        make("TCP", "TRAINER.TCP.CLASS_PROMPT_LAYER", "2")
    with pytest.raises(ConfigError, match="TRAINER.TCP.W must be >= 0; got -1.0"):
        make("TCP", "TRAINER.TCP.W", "-1.0")
    trainer = make("TCP")
    g = torch.Generator().manual_seed(3)
    state = upstream.coop_state(n_ctx=4)  # ctx, token_prefix, token_suffix (fp16)
    for k, v in trainer.model.prompt_learner.meta_net.state_dict().items():
        state[f"meta_net.{k}"] = torch.randn(v.shape, generator=g).half()
    trainer.load_model(upstream.write(tmp_path / "up", state, epoch=50), epoch=50)
    learner = trainer.model.prompt_learner
    assert torch.equal(learner.ctx, state["ctx"].float())
    assert torch.equal(learner.meta_net.linear2.weight, state["meta_net.linear2.weight"].float())
    cfg = apply_config_extenders(get_cfg_default())
    assert dict(cfg.TRAINER.TCP) == {"N_CTX": 4, "CTX_INIT": "", "PREC": "fp16", "W": 8.0,
                                     "CLASS_PROMPT_LAYER": 8}
    # upstream's YAML merges unchanged (its TRAINER.COOP.CTX_INIT: False merges as "")
    merge_from_file(cfg, os.path.join(REPO, "configs", "trainers", "TCP",
                                      "vit_b16_ep100_ctxv1.yaml"))
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.TRAINER.COOP.CTX_INIT) == (
        "adam", 0.002, 50, "")


def mma_by_hand(model, images, scale):
    """MMA's logits with the plain blocks: block output + scale * up(shared(down(ln_1(x))))."""
    clip, learner = model.clip, model.adapter_learner
    for h in model._hooks:  # the plain CLIP, adapters applied by hand
        h.remove()

    def branch(adapters, i):
        def out(block, v, o):
            a = adapters[i + 1]
            return o + scale * a.up(learner.shared_adapter[i + 1](a.down(block.ln_1(v))))
        return out
    try:
        edits = [(("out", i), branch(learner.text_adapter, i)) for i in range(2)]
        text = text_by_hand(clip, learner.token_embedding, learner.eot_idx, edits)
        x = clip.visual.ln_pre(clip.visual.embed(images))
        for i, block in enumerate(clip.visual.transformer.resblocks):
            x = branch(learner.visual_adapter, i)(block, x, block(x))
        image = F.normalize(clip.visual.ln_post(x[:, 0]) @ clip.visual.proj, dim=-1)
        return clip.logit_scale.exp() * image @ text.t()
    finally:
        model._hooks = learner.attach(clip)


def test_mma_logits_and_scaled_gradients_by_hand(make):
    trainer = make("MMA")
    model = trainer.model
    learner = model.adapter_learner
    batch = next(iter(trainer.train_loader_x))
    params = [p for p in learner.parameters() if p.requires_grad]
    logits = model(batch["img"])
    F.cross_entropy(logits, batch["label"]).backward()
    ours = [p.grad.clone() for p in params]
    expected = mma_by_hand(model, batch["img"], 0.5)
    assert torch.allclose(logits, expected, atol=1e-5)
    plain = torch.autograd.grad(F.cross_entropy(expected, batch["label"]), params)
    # upstream's gradient-scale layers: each adapter's gradient is the true one divided by s
    for g_ours, g_true in zip(ours, plain):
        assert torch.allclose(g_ours * 0.5, g_true, atol=1e-6, rtol=1e-4)
    assert any(g.abs().max() > 1e-4 for g in plain)
    trainer.set_model_mode("train")
    out = trainer.forward_backward(batch)
    assert set(out) == {"loss", "ce", "acc"} and out["ce"] == out["loss"]


def test_mma_upstream_layout_errors_and_configs(make, tmp_path, upstream):
    trainer = make("MMA")
    learner = trainer.model.adapter_learner
    keys = set(learner.state_dict())
    assert {"text_adapter.1.down.0.weight", "text_adapter.2.up.bias",
            "visual_adapter.1.down.0.bias", "shared_adapter.2.0.weight"} <= keys
    assert len(keys) == 2 * (2 * 4) + 2 * 2 and not any(k.startswith("token") for k in keys)
    g = torch.Generator().manual_seed(4)
    state = {k: torch.randn(v.shape, generator=g) for k, v in learner.state_dict().items()}
    state["token_embedding"] = torch.randn(4, 77, 32, generator=g)  # upstream's fixed buffers
    state["tokenized_prompts"] = torch.zeros(4, 77, dtype=torch.long)
    folder = tmp_path / "up"
    (folder / "adapter_learner").mkdir(parents=True)
    upstream.write(tmp_path / "tmp", state, epoch=5)
    os.replace(tmp_path / "tmp" / "prompt_learner", folder / "adapter_learner")
    trainer.load_model(str(folder), epoch=5)
    assert torch.equal(learner.shared_adapter[2][0].weight, state["shared_adapter.2.0.weight"])
    for opts, message in (
            (["TRAINER.MMADAPTER.ADAPTER_START", "0"], "0, upstream's adapter on the input"),
            (["TRAINER.MMADAPTER.ADAPTER_END", "3"], "ADAPTER_END=3 exceeds the layers"),
            (["TRAINER.MMADAPTER.ADAPTER_DIM", "32"], "ADAPTER_DIM=32 equals the text width"),
            (["TRAINER.MMADAPTER.ADAPTER_SCALE", "0.0"], "ADAPTER_SCALE must be > 0")):
        with pytest.raises(ConfigError, match=message):
            make("MMA", *opts)
    cfg = apply_config_extenders(get_cfg_default())
    assert dict(cfg.TRAINER.MMADAPTER) == {
        "TEXT_CTX_INIT": "", "PREC": "amp", "ADAPTER_START": 4, "ADAPTER_END": 12,
        "ADAPTER_DIM": 32, "ADAPTER_SCALE": 0.1}
    merge_from_file(cfg, os.path.join(REPO, "configs", "trainers", "MMA", "vit_b16_ep5.yaml"))
    c = cfg.TRAINER.MMADAPTER
    assert (c.TEXT_CTX_INIT, c.ADAPTER_START, c.ADAPTER_END, c.ADAPTER_SCALE, cfg.OPTIM.LR) == (
        "a photo of a", 5, 12, 0.001, 0.0015)


def test_a_none_deep_prompt_leaves_its_layer_alone():
    """TCP's insertion at one layer: entry k None keeps layer k+1's input; the text shortcut
    (``forward_at``, shared prefix) gives the same as the plain loop."""
    from dassl_lite.clip import Transformer
    from dassl_lite.clip.transformer import replace_tokens

    torch.manual_seed(0)
    t = Transformer(width=8, layers=3, heads=2, causal=True).eval()
    x, p = torch.randn(3, 6, 8), torch.randn(3, 2, 8)
    with torch.no_grad():
        by_hand = t.resblocks[1](t.resblocks[0](x))
        by_hand = t.resblocks[2](replace_tokens(by_hand, p, 1))
        assert torch.allclose(t(x, [None, p]), by_hand, atol=1e-6)
        idx = torch.tensor([5, 4, 3])
        assert torch.allclose(t.forward_at(x, idx, deep_prompts=[None, p]),
                              by_hand[torch.arange(3), idx], atol=1e-6)
        assert not torch.allclose(t(x, [None, p]), t(x, [p, p]), atol=1e-3)


def test_multimodaladapter_is_mma_under_upstreams_name(tmp_path, monkeypatch):
    from dassl_lite.config.bundled import find_config
    from dassl_lite.protocols.resolve import resolve_trainer_config
    from dassl_lite.registry import TRAINER_REGISTRY
    from trainers.mma import MMA

    alias = TRAINER_REGISTRY.get("MultiModalAdapter")
    assert issubclass(alias, MMA) and alias.model_name == MMA.model_name == "adapter_learner"
    configs = os.path.join(REPO, "configs", "trainers")
    assert resolve_trainer_config("vit_b16_ep5", "MultiModalAdapter", configs) == \
        os.path.join(configs, "MMA", "vit_b16_ep5.yaml")
    # upstream's commands name configs/trainers/MultiModalAdapter/<cfg>.yaml
    monkeypatch.chdir(tmp_path)
    path, notice = find_config("configs/trainers/MultiModalAdapter/vit_b16_ep5_imnet.yaml")
    assert os.path.samefile(path, os.path.join(configs, "MMA", "vit_b16_ep5_imnet.yaml"))
    assert notice.startswith("--config-file configs/trainers/MultiModalAdapter/vit_b16_ep5_imnet"
                             ".yaml: not in ")
    with pytest.raises(ConfigError, match="MultiModalAdapter/vit_b16.yaml does not exist"):
        find_config("configs/trainers/MultiModalAdapter/vit_b16.yaml")
