"""tools/export_checkpoint.py: our CoOp and MaPLe checkpoints, exported in the upstream key
layout, load with ``strict=True`` into test copies of upstream's modules, tensors equal."""
import importlib.util
import os

import pytest
import torch
from torch import nn

from dassl_lite.clip import CLIP

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "export_checkpoint.py")


def load_tool():
    spec = importlib.util.spec_from_file_location("export_checkpoint_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------ test copies of upstream's modules (key layout)

class UpstreamCoOpPromptLearner(nn.Module):
    """CoOp's PromptLearner as upstream registers it: ``ctx`` + persistent token buffers."""

    def __init__(self, n_cls, n_ctx, width, length=77):
        super().__init__()
        self.ctx = nn.Parameter(torch.zeros(n_ctx, width))
        self.register_buffer("token_prefix", torch.zeros(n_cls, 1, width))
        self.register_buffer("token_suffix", torch.zeros(n_cls, length - 1 - n_ctx, width))


class UpstreamMaPLePromptLearner(UpstreamCoOpPromptLearner):
    """MaPLe's MultiModalPromptLearner: a ParameterList of deep text prompts, own projections."""

    def __init__(self, n_cls, n_ctx, d_t, d_v, depth):
        super().__init__(n_cls, n_ctx, d_t)
        self.proj = nn.Linear(d_t, d_v)
        self.compound_prompts_text = nn.ParameterList(
            [nn.Parameter(torch.zeros(n_ctx, d_t)) for _ in range(depth - 1)])
        self.compound_prompt_projections = nn.ModuleList(
            [nn.Linear(d_t, d_v) for _ in range(depth - 1)])


class UpstreamTextEncoder(nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.transformer = clip.transformer
        self.positional_embedding = clip.positional_embedding
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection


class UpstreamMaPLeCustomCLIP(nn.Module):
    """MaPLe's CustomCLIP (the registered model): prompt learner + frozen OpenAI-layout CLIP."""

    def __init__(self, clip, n_cls, n_ctx, depth):
        super().__init__()
        d_t, d_v = clip.transformer.width, clip.visual.width
        self.prompt_learner = UpstreamMaPLePromptLearner(n_cls, n_ctx, d_t, d_v, depth)
        self.image_encoder = clip.visual
        self.text_encoder = UpstreamTextEncoder(clip)
        self.logit_scale = clip.logit_scale


# ------------------------------------------------ runs to export

def trained_run(toy_trainer, root, out, trainer_name):
    """A saved run: the toy config, prompts moved off their initial values, config.yaml."""
    trainer = toy_trainer(trainer_name, root, out, "all", "DATASET.NUM_SHOTS", "2")
    torch.manual_seed(3)
    with torch.no_grad():
        for p in trainer.model.prompt_learner.parameters():
            p.add_(0.1 * torch.randn_like(p))
    trainer.save_model(2, str(out))
    (out / "config.yaml").write_text(trainer.cfg.dump())
    return trainer


def exported_state(tmp_path, out, root):
    tool = load_tool()
    assert tool.main([str(out), "--out", str(tmp_path / "exported"), "--root", root]) == 0
    return tmp_path / "exported"


@pytest.mark.slow
def test_coop_export_loads_strictly_into_upstream_prompt_learner(toy_trainer, small_toy_root,
                                                                 tmp_path):
    ours = trained_run(toy_trainer, small_toy_root, tmp_path / "run", "CoOp")
    folder = exported_state(tmp_path, tmp_path / "run", small_toy_root)
    assert (folder / "prompt_learner" / "checkpoint").read_text() == "model.pth.tar-3\n"
    ckpt = torch.load(folder / "prompt_learner" / "model.pth.tar-3", weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["optimizer"] is None
    learner = ours.model.prompt_learner
    n_cls, n_ctx, width = learner.token_prefix.shape[0], learner.ctx.shape[0], learner.ctx.shape[1]
    upstream = UpstreamCoOpPromptLearner(n_cls, n_ctx, width)
    upstream.load_state_dict(ckpt["state_dict"], strict=True)
    assert n_cls == 64 and list(ckpt["state_dict"]) == ["ctx", "token_prefix", "token_suffix"]
    assert torch.equal(upstream.ctx, learner.ctx.detach().cpu())
    assert torch.equal(upstream.token_prefix, learner.token_prefix.cpu())
    assert torch.equal(upstream.token_suffix, full_suffix(ours))


def full_suffix(trainer):
    """Upstream's token_suffix, built independently: the class prompts tokenized to all 77
    positions and embedded, after SOS and the context tokens."""
    from dassl_lite.clip import tokenize

    learner, clip = trainer.model.prompt_learner, trainer.model.clip
    prefix = trainer.cfg.TRAINER[trainer.precision_key.split(".")[1]].CTX_INIT
    names = [n.replace("_", " ") for n in trainer.dm.dataset.classnames]
    tokens = tokenize([f"{prefix} {n}." for n in names])
    assert tokens.shape[1] == 77
    with torch.no_grad():
        return clip.token_embedding(tokens)[:, 1 + learner.n_ctx:].cpu()


@pytest.mark.slow
def test_maple_export_loads_strictly_into_upstream_custom_clip(toy_trainer, small_toy_root,
                                                               tmp_path):
    ours = trained_run(toy_trainer, small_toy_root, tmp_path / "run", "MaPLe")
    folder = exported_state(tmp_path, tmp_path / "run", small_toy_root)
    sd = torch.load(folder / "MultiModalPromptLearner" / "model.pth.tar-3",
                    weights_only=True)["state_dict"]
    learner, clip = ours.model.prompt_learner, ours.model.clip
    depth = ours.cfg.TRAINER.MAPLE.PROMPT_DEPTH
    fresh = CLIP(clip.config)  # random frozen weights: every value must come from the file
    upstream = UpstreamMaPLeCustomCLIP(fresh, learner.token_prefix.shape[0], learner.ctx.shape[0],
                                       depth)
    upstream.load_state_dict(sd, strict=True)
    up = upstream.prompt_learner
    assert depth == 3 and len(up.compound_prompts_text) == 2
    for i in range(depth - 1):
        assert torch.equal(up.compound_prompts_text[i], learner.compound_prompts_text[i].detach())
        assert torch.equal(up.compound_prompt_projections[i].weight,
                           learner.compound_prompt_projections[i].weight.detach())
    assert torch.equal(up.ctx, learner.ctx.detach())
    assert torch.equal(up.proj.bias, learner.proj.bias.detach())
    assert torch.equal(up.token_suffix, full_suffix(ours))
    assert torch.equal(upstream.image_encoder.conv1.weight, clip.visual.conv1.weight)
    assert torch.equal(upstream.text_encoder.transformer.resblocks[1].mlp.c_fc.weight,
                       clip.transformer.resblocks[1].mlp.c_fc.weight)
    assert torch.equal(upstream.logit_scale, clip.logit_scale)


def test_unsupported_trainer_and_missing_config_are_named(tmp_path, capsys):
    tool = load_tool()
    assert tool.main([str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "holds no config.yaml" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text("TRAINER:\n  NAME: VPT\n")
    assert tool.main([str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert ("No upstream layout for trainer 'VPT'; exportable: CoOp, CoCoOp, MaPLe"
            in capsys.readouterr().err)


@pytest.mark.slow
def test_export_leaves_no_temporary_folder_and_never_replaces_the_runs_files(
        toy_trainer, small_toy_root, tmp_path, monkeypatch, capsys):
    run, out = tmp_path / "run", tmp_path / "exported"
    trained_run(toy_trainer, small_toy_root, run, "CoOp")
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    files = sorted(p for p in run.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    tool = load_tool()
    for _ in range(2):  # exporting again into an earlier export's folder is fine
        assert tool.main([str(run), "--out", str(out), "--root", small_toy_root]) == 0
    assert not [n for n in os.listdir(temp) if n.startswith("dassl_lite_export_")]
    assert tool.main([str(run), "--out", str(run), "--root", small_toy_root]) == 2
    assert (f"error: --out {run} is a run's folder (it is the run being exported)"
            in capsys.readouterr().err)
    assert sorted(p for p in run.rglob("*") if p.is_file()) == files
    assert all(p.read_bytes() == data for p, data in before.items())
