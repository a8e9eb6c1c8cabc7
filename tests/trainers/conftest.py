"""A tiny random CLIP checkpoint (OpenAI format) and configs for the trainer tests on TinyColors."""
import types
from collections import OrderedDict

import pytest
import torch

from dassl_lite.clip import CLIP, CLIPConfig, build_model

import trainers  # noqa: F401  (registers the trainers and their config sections)


# ViT: width 32 on both sides (1 head), 2 layers, 32 px images in 16 px patches, CLIP's vocabulary.
TINY_CLIP = CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=32,
                       vision_patch_size=16, vision_heads=1, context_length=77, vocab_size=49408,
                       transformer_width=32, transformer_heads=1, transformer_layers=2)


@pytest.fixture(scope="session")
def tiny_clip_path(random_clip_file) -> str:
    """Path of a random tiny ViT CLIP saved as a plain OpenAI-format state dict."""
    return random_clip_file(TINY_CLIP)


@pytest.fixture
def tiny_clip(tiny_clip_path) -> CLIP:
    """A fresh float32 copy of the tiny CLIP (eval mode)."""
    return build_model(torch.load(tiny_clip_path, weights_only=True))


@pytest.fixture
def trainer_cfg(clip_cfg, tiny_clip_path):
    """``trainer_cfg(TRAINER, KEY, VALUE, ..., output_dir=None)``: TinyColors + the tiny CLIP,
    merged as tools/train.py does (fp32, 4 context tokens, 1 epoch, batches of 8)."""

    def make(trainer, *opts, output_dir=None):
        base = [f"TRAINER.{trainer.upper()}.N_CTX", "4"] if trainer in ("CoOp", "CoCoOp") else []
        return clip_cfg(trainer, tiny_clip_path, *base, *opts, output_dir=output_dir)

    return make


@pytest.fixture
def build(trainer_cfg, build_seeded):
    """``build(TRAINER, KEY, VALUE, ..., output_dir=None)``: a seeded trainer."""
    return lambda trainer, *opts, output_dir=None: build_seeded(
        trainer_cfg(trainer, *opts, output_dir=output_dir))


def write_upstream(directory, state, epoch=50):
    """A checkpoint directory exactly as upstream CoOp/CoCoOp (Dassl) writes it."""
    folder = directory / "prompt_learner"
    folder.mkdir(parents=True)
    ckpt = {"state_dict": state, "epoch": epoch,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0]}]},
            "scheduler": {"last_epoch": epoch}, "val_result": None}
    torch.save(ckpt, folder / f"model.pth.tar-{epoch}")
    (folder / "checkpoint").write_text(f"model.pth.tar-{epoch}\n")
    return str(directory)


def upstream_coop_state(n_ctx=4, n_cls=4, csc=False, width=32):
    """Upstream's PromptLearner.state_dict() in fp16: ctx and the full 77-token fixed parts."""
    g = torch.Generator().manual_seed(1)
    shape = (n_cls, n_ctx, width) if csc else (n_ctx, width)
    return OrderedDict([
        ("ctx", (0.02 * torch.randn(shape, generator=g)).half()),
        ("token_prefix", torch.randn(n_cls, 1, width, generator=g).half()),
        ("token_suffix", torch.randn(n_cls, 77 - 1 - n_ctx, width, generator=g).half()),
    ])


def upstream_cocoop_state(n_ctx=4):
    g = torch.Generator().manual_seed(2)
    hidden = 32 // 16
    state = upstream_coop_state(n_ctx)
    state["meta_net.linear1.weight"] = torch.randn(hidden, 32, generator=g).half()
    state["meta_net.linear1.bias"] = torch.randn(hidden, generator=g).half()
    state["meta_net.linear2.weight"] = torch.randn(32, hidden, generator=g).half()
    state["meta_net.linear2.bias"] = torch.randn(32, generator=g).half()
    return state


@pytest.fixture
def upstream():
    """Writers of upstream-format checkpoints: ``write(dir, state, epoch)``,
    ``coop_state(n_ctx, n_cls, csc, width)``, ``cocoop_state(n_ctx)``."""
    return types.SimpleNamespace(write=write_upstream, coop_state=upstream_coop_state,
                                 cocoop_state=upstream_cocoop_state)
