"""KgCoOp: the knowledge-guided term against hand computations and an independent computation of
the whole loss, CoOp's context initialisation, configs, upstream checkpoints."""
import os

import pytest
import torch
import torch.nn.functional as F

from dassl_lite.clip import tokenize
from dassl_lite.config import ConfigError, apply_config_extenders, get_cfg_default, merge_from_file
from trainers.kgcoop import kg_distance

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs", "trainers", "KgCoOp")
OPTS = ["TRAINER.KGCOOP.N_CTX", "4", "OPTIM.LR", "0.05"]


@pytest.fixture
def kg(clip_cfg, tiny_clip_path, build_seeded):
    """``kg(KEY, VALUE, ..., output_dir=None)``: a seeded KgCoOp trainer on the tiny CLIP."""
    return lambda *opts, output_dir=None: build_seeded(
        clip_cfg("KgCoOp", tiny_clip_path, *OPTS, *opts, output_dir=output_dir))


def test_kg_distance_by_hand():
    text = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # cosines ignore the norms
    handcrafted = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    assert kg_distance(text, handcrafted).item() == pytest.approx(1 - (1.0 + 0.8) / 2, rel=1e-6)
    assert kg_distance(handcrafted, handcrafted).item() == pytest.approx(0.0, abs=1e-6)


def test_step_loss_is_ce_plus_w_times_the_distance(kg):
    trainer = kg("TRAINER.KGCOOP.W", "8.0", "DATALOADER.FEATURE_CACHE.ENABLED", "False")
    model = trainer.model
    names = [n.replace("_", " ") for n in trainer.dm.dataset.classnames]
    batch = next(iter(trainer.train_loader_x))
    with torch.no_grad():  # independently: CLIP's own encode_text of the hand-written prompts
        handcrafted = F.normalize(model.clip.encode_text(
            tokenize([f"a photo of a {n}." for n in names])), dim=-1)
        text = model.text_features()
        logits = model.clip.logit_scale.exp() * F.normalize(
            model.clip.visual(batch["img"]), dim=-1) @ text.t()
        distance = 1 - (text * handcrafted).sum(-1).mean()
        expected = F.cross_entropy(logits, batch["label"]) + 8.0 * distance
    assert torch.allclose(model.handcrafted_text_features, handcrafted, atol=1e-6)
    trainer.set_model_mode("train")
    out = trainer.forward_backward(batch)
    assert out["kg"] == pytest.approx(distance.item(), rel=1e-4, abs=1e-6)
    assert out["loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert distance.item() > 1e-3  # a random context: the term is not trivially zero


def test_context_is_coops(kg, build_seeded, clip_cfg, tiny_clip_path):
    init = ("a photo of a", "")
    for ctx_init in init:
        ours = kg("TRAINER.KGCOOP.CTX_INIT", ctx_init).model.prompt_learner
        coop = build_seeded(clip_cfg("CoOp", tiny_clip_path, "TRAINER.COOP.N_CTX", "4",
                                     "TRAINER.COOP.CTX_INIT", ctx_init)).model.prompt_learner
        assert ours.n_ctx == coop.n_ctx and torch.equal(ours.ctx, coop.ctx)
        assert torch.equal(ours.tokenized_prompts, coop.tokenized_prompts)


def test_negative_weight_is_refused(kg):
    with pytest.raises(ConfigError, match="TRAINER.KGCOOP.W must be >= 0; got -1.0"):
        kg("TRAINER.KGCOOP.W", "-1.0")


def test_upstream_checkpoint_loads(kg, tmp_path, upstream):
    trainer = kg()
    state = upstream.coop_state(n_ctx=4)
    state["bias_vectors"] = torch.randn(1, 512).half()  # upstream's unused tensors
    state["meta_net.linear1.weight"] = torch.randn(512, 512).half()
    state["meta_net.linear1.bias"] = torch.randn(512).half()
    trainer.load_model(upstream.write(tmp_path / "up", state, epoch=100), epoch=100)
    assert torch.equal(trainer.model.prompt_learner.ctx, state["ctx"].float())
    assert trainer.model_epoch == 100


def merged(name):
    cfg = apply_config_extenders(get_cfg_default())
    merge_from_file(cfg, os.path.join(CONFIGS, name))
    return cfg


def test_defaults_and_configs():
    cfg = apply_config_extenders(get_cfg_default())
    assert dict(cfg.TRAINER.KGCOOP) == {"N_CTX": 16, "CSC": False, "CTX_INIT": "", "PREC": "fp16",
                                        "CLASS_TOKEN_POSITION": "end", "W": 1.0}
    for name, backbone in (("vit_b16_ep100_ctxv1.yaml", "ViT-B/16"), ("rn50_ep100.yaml", "RN50")):
        cfg = merged(name)
        assert cfg.MODEL.BACKBONE.NAME == backbone
        assert (cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.DATALOADER.TRAIN_X.BATCH_SIZE) == (
            0.002, 100, 128)
        c = cfg.TRAINER.KGCOOP
        assert (c.N_CTX, c.CTX_INIT, c.W, c.CSC) == (4, "a photo of a", 8.0, False)
    toy = merged("toy.yaml")
    assert toy.MODEL.BACKBONE.NAME == "ToyCLIP" and toy.TRAINER.KGCOOP.PREC == "fp32"


def test_protocols_do_not_fall_back_to_the_parents_configs():
    """KgCoOp subclasses CoOp and PromptSRC subclasses IVLP, but they read their own sections:
    CoOp's or IVLP's YAMLs would set values they ignore, so a config name resolves only in
    their own folder (ZeroshotCLIP2 still uses ZeroshotCLIP's, same section)."""
    from dassl_lite.errors import DasslLiteError
    from dassl_lite.protocols.resolve import resolve_trainer_config

    trainers_dir = os.path.join(REPO, "configs", "trainers")
    with pytest.raises(DasslLiteError, match=r"'vit_b16' is neither a file nor a name in .*KgCoOp "
                                             r"\(available: rn50_ep100, toy, vit_b16_ep100_ctxv1\)"):
        resolve_trainer_config("vit_b16", "KgCoOp", trainers_dir)
    with pytest.raises(DasslLiteError, match="neither a file nor a name"):
        resolve_trainer_config("vit_b16_c2_ep5_batch4_2+2ctx", "PromptSRC", trainers_dir)
    assert resolve_trainer_config("toy", "KgCoOp", trainers_dir).endswith("KgCoOp/toy.yaml")
    assert resolve_trainer_config("vit_b16", "ZeroshotCLIP2", trainers_dir).endswith(
        "ZeroshotCLIP/vit_b16.yaml")
