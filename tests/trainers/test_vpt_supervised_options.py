"""VPTSupervised's KMnP/vpt prompt options on a tiny random ViT: which layers get which prompt
set (NUM_DEEP_LAYERS, REVERSE_DEEP, DEEP_SHARED), VIT_POOL_TYPE against hand computation,
class-embedding INITIATION, TRANSFER_TYPE end2end, the bad-config errors and KMnP/vpt's
Checkpointer files through --model-dir. (Logits/gradients against KMnP's own code on identical
weights were compared outside the suite; docs/methods.md gives the numbers.)"""
import os

import numpy as np
import pytest
import torch

from dassl_lite.backbones import PromptableViT, ViTArch, build_timm_vit
from dassl_lite.config import (ConfigError, apply_config_extenders, get_cfg_default,
                               merge_from_list)
from dassl_lite.engine import CheckpointError
from dassl_lite.optim import build_optimizer
from dassl_lite.utils.safe_load import UnsafeCheckpointError
from trainers.vpt_kmnp import load_cls_embeddings
from trainers.vpt_supervised import (SupervisedVPT, VPTSupervised, build_learner, pool_tokens,
                                     set_encoder_dropout)

ARCH = ViTArch(8, 16, 4, 2, 32, 16)  # patch 8, width 16, 4 blocks, 2 heads, 16 px: 4 patches
N, C = 2, 3  # prompt tokens, classes


def cfg_with(*opts):
    cfg = get_cfg_default()
    apply_config_extenders(cfg)
    merge_from_list(cfg, ["MODEL.BACKBONE.NAME", "ToyViT", "MODEL.PROMPT.NUM_TOKENS", str(N),
                          *opts])
    return cfg


def tiny_model(*opts, pool="original"):
    torch.manual_seed(0)
    backbone = PromptableViT(build_timm_vit(ARCH, ARCH.image_size), ARCH).eval()
    cfg = cfg_with("MODEL.PROMPT.VIT_POOL_TYPE", pool, *opts)
    VPTSupervised.check_cfg(None, cfg)
    learner = build_learner(cfg, ARCH, C, backbone)
    return SupervisedVPT(backbone, learner, pool)


def block_inputs(model, images):
    """The input of every block of ``model``'s backbone for ``images``."""
    seen = []
    hooks = [b.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
             for b in model.backbone.vit.blocks]
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return seen


IMAGES = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
DEEP = ("MODEL.PROMPT.DEEP", "True")


@pytest.mark.parametrize("opts, sets", [
    # sets[i]: which prompt set sits at positions 1..N of block i's input ("ctx", deep index,
    # "out" = the previous block's outputs, "none" = no prompt positions: 1 + 4 tokens)
    ((), ["ctx", "out", "out", "out"]),
    (DEEP, ["ctx", 0, 1, 2]),
    ((*DEEP, "MODEL.PROMPT.NUM_DEEP_LAYERS", "2"), ["ctx", 0, "out", "out"]),
    ((*DEEP, "MODEL.PROMPT.NUM_DEEP_LAYERS", "1"), ["ctx", "out", "out", "out"]),
    ((*DEEP, "MODEL.PROMPT.DEEP_SHARED", "True"), ["ctx", "ctx", "ctx", "ctx"]),
    ((*DEEP, "MODEL.PROMPT.DEEP_SHARED", "True", "MODEL.PROMPT.NUM_DEEP_LAYERS", "3"),
     ["ctx", "ctx", "ctx", "out"]),
    ((*DEEP, "MODEL.PROMPT.REVERSE_DEEP", "True", "MODEL.PROMPT.NUM_DEEP_LAYERS", "2"),
     ["none", "none", 0, 1]),
    ((*DEEP, "MODEL.PROMPT.REVERSE_DEEP", "True", "MODEL.PROMPT.NUM_DEEP_LAYERS", "4"),
     [0, 1, 2, 3]),
])
def test_which_layers_get_which_prompts(opts, sets):
    model = tiny_model(*opts)
    prompts = model.learner.prompts
    inputs = block_inputs(model, IMAGES)
    reverse = prompts.start is not None
    for i, (x, want) in enumerate(zip(inputs, sets)):
        # REVERSE_DEEP (as KMnP/vpt) never inserts: the first n patch outputs are overwritten
        assert x.shape[1] == (1 + 4 if reverse else 1 + N + 4), (i, x.shape)
        if want == "none":
            continue
        got = x[0, 1:1 + N]
        if want == "out":
            assert not any(torch.allclose(got, p, atol=1e-6) for p in all_sets(prompts)), i
        else:
            ref = prompts.ctx if want == "ctx" else prompts.deep[want]
            torch.testing.assert_close(got, ref.detach(), rtol=0, atol=0)


def all_sets(prompts):
    sets = [] if prompts.ctx is None else [prompts.ctx.detach()]
    return sets + ([] if prompts.deep is None else list(prompts.deep.detach()))


def test_shared_sets_are_one_parameter_and_it_learns_from_every_layer():
    model = tiny_model(*DEEP, "MODEL.PROMPT.DEEP_SHARED", "True")
    prompts = model.learner.prompts
    assert prompts.deep is None
    assert [n for n, _ in prompts.named_parameters()] == ["ctx"]
    model(IMAGES).sum().backward()
    shared_grad = prompts.ctx.grad.clone()
    # the same forward with the set only at layer 0 gives a different gradient
    prompts.ctx.grad = None
    prompts.shared = False
    prompts.depth = 1
    model(IMAGES).sum().backward()
    assert not torch.allclose(prompts.ctx.grad, shared_grad)


@pytest.mark.parametrize("pool", ["original", "imgprompt_pool", "img_pool", "prompt_pool"])
def test_pooling_is_kmnps_mean_over_its_positions(pool):
    tokens = torch.arange(2 * 7 * 3, dtype=torch.float32).reshape(2, 7, 3)  # CLS, 2 prompts, 4
    hand = {"original": tokens[:, 0], "imgprompt_pool": tokens[:, 1:7].sum(1) / 6,
            "img_pool": tokens[:, 3:7].sum(1) / 4, "prompt_pool": tokens[:, 1:3].sum(1) / 2}
    torch.testing.assert_close(pool_tokens(tokens, pool, 2), hand[pool])
    model = tiny_model(*DEEP, pool=pool)
    with torch.no_grad():
        seq = model.backbone.tokens(IMAGES, **model.learner.prompts.vision_inputs(2))
        torch.testing.assert_close(model.features(IMAGES), pool_tokens(seq, pool, N))
    if pool != "original":
        assert not torch.allclose(model.features(IMAGES), seq[:, 0])


D = ARCH.width
HEAD = D * C + C


@pytest.mark.parametrize("opts, expected", [
    ((*DEEP, "MODEL.PROMPT.NUM_DEEP_LAYERS", "3"), N * D * 3 + HEAD),
    ((*DEEP, "MODEL.PROMPT.NUM_DEEP_LAYERS", "3", "MODEL.PROMPT.REVERSE_DEEP", "True"),
     N * D * 3 + HEAD),
    ((*DEEP, "MODEL.PROMPT.DEEP_SHARED", "True"), N * D + HEAD),
    ((*DEEP, "MODEL.PROMPT.NUM_DEEP_LAYERS", "2", "MODEL.PROMPT.PROJECT", "4"),
     N * 4 * 2 + 4 * D + D + HEAD),
])
def test_trainable_values(opts, expected):
    model = tiny_model(*opts)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


def test_end2end_trains_the_whole_backbone_with_kmnps_dropout():
    model = tiny_model("MODEL.TRANSFER_TYPE", "end2end")
    set_encoder_dropout(model.backbone, 0.1)
    backbone_values = sum(p.numel() for p in model.backbone.parameters())
    assert model.learner.prompts is None and model.learner.backbone is model.backbone
    assert sum(p.numel() for p in model.learner.parameters() if p.requires_grad) == (
        backbone_values + HEAD)
    model.train()
    assert model.backbone.training and model.backbone.vit.blocks[0].mlp.drop1.p == 0.1
    cfg = cfg_with("MODEL.TRANSFER_TYPE", "end2end", "OPTIM.LR", "0.1")
    optim = build_optimizer(model.learner, cfg.OPTIM)
    before = model.backbone.vit.blocks[0].attn.qkv.weight.detach().clone()
    torch.nn.functional.cross_entropy(model(IMAGES), torch.tensor([0, 1])).backward()
    optim.step()
    assert (model.backbone.vit.blocks[0].attn.qkv.weight - before).abs().max() > 1e-4
    linear = tiny_model("MODEL.TRANSFER_TYPE", "linear").train()
    assert not linear.backbone.training
    assert not any(p.requires_grad for p in linear.backbone.parameters())


@pytest.fixture
def clsemb(tmp_path):
    """A class-embedding .npy [N, L+1, D] whose entry [t, j, :] is 100 t + j."""
    array = (100 * np.arange(N)[:, None, None] + np.arange(5)[None, :, None]
             + np.zeros((1, 1, D))).astype(np.float32)
    path = tmp_path / "clsemb.npy"
    np.save(path, array)
    return path


@pytest.mark.parametrize("init, layer_point", [
    ("final-cls", [4, 4, 4, 4]), ("cls-nolastl", [0, 1, 2, 3]), ("cls-nofirstl", [1, 2, 3, 4])])
def test_class_embedding_initiation(clsemb, init, layer_point):
    model = tiny_model(*DEEP, "MODEL.PROMPT.INITIATION", init, "MODEL.PROMPT.CLSEMB_FOLDER",
                       str(clsemb.parent), "MODEL.PROMPT.CLSEMB_PATH", clsemb.name)
    prompts = model.learner.prompts
    sets = [prompts.ctx] + list(prompts.deep)
    for layer, point in enumerate(layer_point):
        want = torch.tensor([[100.0 * t + point] * D for t in range(N)])
        torch.testing.assert_close(sets[layer].detach(), want)
    sets[0].data[0, 0] = -1  # independent copies (KMnP's final-cls shares one expanded tensor)
    assert sets[1][0, 0] != -1


class Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def test_class_embedding_file_errors(tmp_path, clsemb):
    def load(path, init="cls-nolastl"):
        return load_cls_embeddings(str(path), init, N, ARCH.depth, D)

    with pytest.raises(ConfigError, match=r"no such file .*shape \[NUM_TOKENS=2, T, 16\] with "
                                          r"T = 5"):
        load(tmp_path / "missing.npy")
    np.save(tmp_path / "short.npy", np.zeros((N, 4, D), np.float32))
    with pytest.raises(ConfigError, match=r"short.npy' has shape \[2, 4, 16\]; INITIATION "
                                          r"cls-nolastl expects \[NUM_TOKENS=2, T, 16\] "
                                          r"with T = 5"):
        load(tmp_path / "short.npy")
    load(tmp_path / "short.npy", "final-cls")  # final-cls reads only the last point
    np.save(tmp_path / "obj.npy", np.array([Payload()], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match="obj.npy' is not a plain NumPy .npy array"):
        load(tmp_path / "obj.npy")
    bad = np.zeros((N, 5, D), np.float32)
    bad[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ConfigError, match="nan.npy' holds non-finite values"):
        load(tmp_path / "nan.npy")


@pytest.mark.parametrize("opts, message", [
    (["MODEL.TRANSFER_TYPE", "partial-1"], "MODEL.TRANSFER_TYPE 'partial-1' (KMnP/vpt) is not "
     "supported: fine-tuning the last block (+ final norm) only is a baseline not built here; "
     "use one of prompt, linear, end2end"),
    (["MODEL.TRANSFER_TYPE", "side"], "'side' (KMnP/vpt) is not supported: side-tuning needs"),
    (["MODEL.TRANSFER_TYPE", "adapter"], "'adapter' (KMnP/vpt) is not supported"),
    (["MODEL.TRANSFER_TYPE", "end2end", "TRAINER.VPTSUPERVISED.PREC", "fp16"],
     "MODEL.TRANSFER_TYPE end2end trains the backbone, whose weights TRAINER.VPTSUPERVISED.PREC "
     "fp16 keeps in half precision; use fp32 or amp"),
    (["MODEL.PROMPT.NUM_DEEP_LAYERS", "2"],
     "MODEL.PROMPT.NUM_DEEP_LAYERS needs MODEL.PROMPT.DEEP True"),
    ([*DEEP, "MODEL.PROMPT.NUM_DEEP_LAYERS", "0"],
     "MODEL.PROMPT.NUM_DEEP_LAYERS must be None (all layers) or an int >= 1; got 0"),
    ([*DEEP, "MODEL.PROMPT.REVERSE_DEEP", "True"],
     "MODEL.PROMPT.REVERSE_DEEP needs MODEL.PROMPT.NUM_DEEP_LAYERS"),
    ([*DEEP, "MODEL.PROMPT.REVERSE_DEEP", "True", "MODEL.PROMPT.NUM_DEEP_LAYERS", "2",
      "MODEL.PROMPT.DEEP_SHARED", "True"], "DEEP_SHARED is not supported with REVERSE_DEEP"),
    (["MODEL.PROMPT.DEEP_SHARED", "True"], "MODEL.PROMPT.DEEP_SHARED needs MODEL.PROMPT.DEEP"),
    (["MODEL.PROMPT.FORWARD_DEEP_NOEXPAND", "True"],
     "MODEL.PROMPT.FORWARD_DEEP_NOEXPAND is not supported"),
    (["MODEL.PROMPT.VIT_POOL_TYPE", "gap"], "MODEL.PROMPT.VIT_POOL_TYPE must be one of original, "
     "imgprompt_pool, img_pool, prompt_pool; got 'gap'"),
    (["MODEL.TRANSFER_TYPE", "linear", "MODEL.PROMPT.VIT_POOL_TYPE", "img_pool"],
     "MODEL.PROMPT.VIT_POOL_TYPE applies only with MODEL.TRANSFER_TYPE prompt"),
    (["MODEL.PROMPT.INITIATION", "final-cls"],
     "MODEL.PROMPT.INITIATION final-cls needs MODEL.PROMPT.CLSEMB_PATH"),
    (["MODEL.PROMPT.CLSEMB_PATH", "x.npy"], "MODEL.PROMPT.CLSEMB_PATH is read only with "
     "INITIATION final-cls, cls-nolastl, cls-nofirstl; INITIATION is random"),
    (["MODEL.PROMPT.INITIATION", "cls-nolastl", "MODEL.PROMPT.CLSEMB_PATH", "x.npy",
      "MODEL.PROMPT.PROJECT", "8"], "INITIATION cls-nolastl is not supported with PROJECT 8"),
])
def test_option_errors(opts, message):
    with pytest.raises(ConfigError) as info:
        VPTSupervised.check_cfg(None, cfg_with(*opts))
    assert message in str(info.value)


def test_num_deep_layers_beyond_the_backbone():
    cfg = cfg_with(*DEEP, "MODEL.PROMPT.NUM_DEEP_LAYERS", "5")
    with pytest.raises(ConfigError, match=r"NUM_DEEP_LAYERS=5 must lie in 1..4, the blocks"):
        build_learner(cfg, ARCH, C)


# ------------------------------------------------------------ KMnP/vpt checkpoints via --model-dir

@pytest.fixture
def tiny_vit_file(tmp_path_factory):
    """A random timm ViT (patch 16, width 64, 2 blocks, 1 head) for 32 px, as a state dict."""
    torch.manual_seed(3)
    arch = ViTArch(16, 64, 2, 1, 128, 32)
    path = tmp_path_factory.mktemp("vit") / "tiny_vit.pth"
    torch.save(build_timm_vit(arch, 32).state_dict(), path)
    return str(path)


KMNP_OPTS = ["MODEL.PROMPT.NUM_TOKENS", "3", "MODEL.PROMPT.DEEP", "True",
             "MODEL.PROMPT.VIT_POOL_TYPE", "prompt_pool"]


def kmnp_state(n_cls, g=None):
    """KMnP/vpt's ViT.state_dict() for a deep prompt run on the tiny ViT (3 tokens, 2 blocks):
    learned tensors plus (a sample of) its frozen encoder keys."""
    g = torch.Generator().manual_seed(5)
    return {
        "enc.transformer.prompt_embeddings": torch.randn(1, 3, 64, generator=g),
        "enc.transformer.deep_prompt_embeddings": torch.randn(1, 3, 64, generator=g),
        "enc.transformer.embeddings.cls_token": torch.zeros(1, 1, 64),
        "enc.transformer.encoder.layer.0.attn.query.weight": torch.zeros(64, 64),
        "head.last_layer.weight": torch.randn(n_cls, 64, generator=g),
        "head.last_layer.bias": torch.randn(n_cls, generator=g),
    }


def test_kmnp_checkpointer_files_load_to_the_same_logits(clip_cfg, build_seeded, tiny_vit_file,
                                                         tmp_path):
    trainer = build_seeded(clip_cfg("VPTSupervised", tiny_vit_file, *KMNP_OPTS))
    n_cls = trainer.num_classes
    state = kmnp_state(n_cls)
    out = tmp_path / "kmnp_out"  # KMnP's OUTPUT_DIR as fvcore's Checkpointer leaves it
    out.mkdir()
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, out / "last_model.pth")
    (out / "last_checkpoint").write_text("last_model.pth")
    trainer.load_model(str(out))
    # the same model with its state dict built directly
    reference = build_seeded(clip_cfg("VPTSupervised", tiny_vit_file, *KMNP_OPTS))
    learner = reference.model.learner
    learner.load_state_dict({
        "prompts.ctx": state["enc.transformer.prompt_embeddings"][0],
        "prompts.deep": state["enc.transformer.deep_prompt_embeddings"],
        "head.last_layer.weight": state["head.last_layer.weight"],
        "head.last_layer.bias": state["head.last_layer.bias"]})
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    trainer.model.eval(), reference.model.eval()
    with torch.no_grad():
        got, want = trainer.model(images), reference.model(images)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.allclose(got, build_seeded(clip_cfg(
        "VPTSupervised", tiny_vit_file, *KMNP_OPTS)).model.eval()(images))
    trainer.load_model(str(out / "last_model.pth"))  # the file itself works too
    with pytest.raises(CheckpointError, match="carry no epoch; drop --load-epoch"):
        trainer.load_model(str(out), epoch=3)

    bad = dict(state, **{"enc.transformer.prompt_embeddings": torch.zeros(1, 4, 64)})
    torch.save({"model": bad}, out / "last_model.pth")
    with pytest.raises(CheckpointError, match=r"'enc.transformer.prompt_embeddings' has shape "
                                              r"\(1, 4, 64\); this model expects \(1, 3, 64\)"):
        trainer.load_model(str(out))
    torch.save({"model": {k: v for k, v in state.items() if not k.startswith("head.")}},
               out / "last_model.pth")
    with pytest.raises(CheckpointError, match=r"missing trainable keys \['head.last_layer.weight'"):
        trainer.load_model(str(out))
    torch.save({"shallow_prompt": np.zeros((1, 3, 64), np.float32)}, out / "last_model.pth")
    with pytest.raises(CheckpointError, match="KMnP/vpt's per-epoch prompt file"):
        trainer.load_model(str(out))
    torch.save({"model": Payload()}, out / "last_model.pth")
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system"):
        trainer.load_model(str(out))


def test_end2end_checkpoints_hold_the_backbone(clip_cfg, build_seeded, tiny_vit_file, tmp_path):
    cfg = clip_cfg("VPTSupervised", tiny_vit_file, "MODEL.TRANSFER_TYPE", "end2end",
                   "TEST.NO_TEST", "True", output_dir=tmp_path / "run")
    trainer = build_seeded(cfg)
    before = trainer.model.backbone.vit.blocks[0].attn.qkv.weight.detach().clone()
    trainer.train()
    trained = trainer.model.backbone.vit.blocks[0].attn.qkv.weight.detach().clone()
    assert (trained - before).abs().max() > 1e-6
    fresh = build_seeded(cfg)
    fresh.load_model(str(tmp_path / "run"))
    torch.testing.assert_close(fresh.model.backbone.vit.blocks[0].attn.qkv.weight, trained)


def kmnp_layout(timm_state):
    """A timm ViT state dict in KMnP/vpt's own module layout (written out by hand here)."""
    out = {"transformer.embeddings.patch_embeddings.weight": timm_state["patch_embed.proj.weight"],
           "transformer.embeddings.patch_embeddings.bias": timm_state["patch_embed.proj.bias"],
           "transformer.embeddings.cls_token": timm_state["cls_token"],
           "transformer.embeddings.position_embeddings": timm_state["pos_embed"],
           "transformer.encoder.encoder_norm.weight": timm_state["norm.weight"],
           "transformer.encoder.encoder_norm.bias": timm_state["norm.bias"]}
    blocks = {int(k.split(".")[1]) for k in timm_state if k.startswith("blocks.")}
    names = {"norm1": "attention_norm", "norm2": "ffn_norm", "mlp.fc1": "ffn.fc1",
             "mlp.fc2": "ffn.fc2", "attn.proj": "attn.out"}
    for i in blocks:
        ours, theirs = f"blocks.{i}.", f"transformer.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            for name, part in zip(("query", "key", "value"),
                                  timm_state[f"{ours}attn.qkv.{kind}"].chunk(3)):
                out[f"{theirs}attn.{name}.{kind}"] = part
            for a, b in names.items():
                out[f"{theirs}{b}.{kind}"] = timm_state[f"{ours}{a}.{kind}"]
    return out


def test_kmnp_end2end_checkpoints_and_kmnp_backbone_files(clip_cfg, build_seeded, tiny_vit_file,
                                                          tmp_path):
    """KMnP's own ViT layout (its end2end checkpoints' ``enc.*``, or a saved KMnP backbone)
    converts to timm's: the same outputs as the timm file it was written from."""
    from dassl_lite.backbones import load_supervised_vit

    timm_state = torch.load(tiny_vit_file, weights_only=True)
    torch.save(kmnp_layout(timm_state), tmp_path / "kmnp_vit.pth")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(load_supervised_vit(str(tmp_path / "kmnp_vit.pth"), 32)(images),
                                   load_supervised_vit(tiny_vit_file, 32)(images))
    trainer = build_seeded(clip_cfg("VPTSupervised", tiny_vit_file,
                                    "MODEL.TRANSFER_TYPE", "end2end"))
    learned = {k: v + 0.01 for k, v in timm_state.items()}  # an "end2end-trained" backbone
    head = trainer.model.learner.head.last_layer
    state = {f"enc.{k}": v for k, v in kmnp_layout(learned).items()}
    state.update({"head.last_layer.weight": torch.ones_like(head.weight),
                  "head.last_layer.bias": torch.zeros_like(head.bias)})
    torch.save({"model": state}, tmp_path / "end2end.pth")
    trainer.load_model(str(tmp_path / "end2end.pth"))
    got = trainer.model.backbone.vit.state_dict()
    for key, value in learned.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0)
    del state["enc.transformer.encoder.layer.1.attn.key.weight"]
    torch.save({"model": state}, tmp_path / "end2end.pth")
    with pytest.raises(CheckpointError, match=r"encoder \(enc.\*\): KMnP/vpt ViT state dict lacks "
                                              r"\['transformer.encoder.layer.1.attn.key.weight'\]"):
        trainer.load_model(str(tmp_path / "end2end.pth"))
