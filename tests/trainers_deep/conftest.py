"""A tiny random CLIP with different text/vision widths and depths, trainer configs on TinyColors,
and writers of upstream (multimodal-prompt-learning) checkpoint directories."""
import types
from collections import OrderedDict

import pytest
import torch

from dassl_lite.clip import CLIP, CLIPConfig, build_model

import trainers  # noqa: F401  (registers the trainers and their config sections)


# Text: width 32, 4 layers; vision: width 48, 3 layers, 32 px in 16 px patches; embed 24.
D_T, D_V, EMBED, L_T, L_V = 32, 48, 24, 4, 3
TINY_DEEP_CLIP = CLIPConfig(embed_dim=EMBED, image_resolution=32, vision_layers=L_V,
                            vision_width=D_V, vision_patch_size=16, vision_heads=1,
                            context_length=77, vocab_size=49408, transformer_width=D_T,
                            transformer_heads=1, transformer_layers=L_T)
# Small settings that fit the tiny CLIP (the defaults ask for 9 layers).
TINY_OPTS = {
    "MaPLe": ["TRAINER.MAPLE.PROMPT_DEPTH", "3"],
    "IVLP": ["TRAINER.IVLP.N_CTX_VISION", "3", "TRAINER.IVLP.PROMPT_DEPTH_TEXT", "4",
             "TRAINER.IVLP.PROMPT_DEPTH_VISION", "2"],
    "VPT": ["TRAINER.VPT.N_CTX_VISION", "3", "TRAINER.VPT.PROMPT_DEPTH_VISION", "2"],
    "VPTDeep": ["TRAINER.VPTDEEP.N_CTX", "3"],
    "ZeroshotCLIP": [],
}


@pytest.fixture(scope="session")
def deep_clip_path(random_clip_file) -> str:
    """Path of the random tiny CLIP saved as a plain OpenAI-format state dict."""
    return random_clip_file(TINY_DEEP_CLIP)


@pytest.fixture
def deep_clip(deep_clip_path) -> CLIP:
    """A fresh float32 copy of the tiny CLIP (eval mode)."""
    return build_model(torch.load(deep_clip_path, weights_only=True))


@pytest.fixture
def deep_cfg(clip_cfg, deep_clip_path):
    """``deep_cfg(TRAINER, KEY, VALUE, ..., output_dir=None)``: TinyColors (4 classes) + the tiny
    CLIP, merged as tools/train.py does (fp32, 1 epoch, batches of 8, lr 0.05, TINY_OPTS)."""

    def make(trainer, *opts, output_dir=None):
        return clip_cfg(trainer, deep_clip_path, "OPTIM.LR", "0.05", *TINY_OPTS[trainer], *opts,
                        output_dir=output_dir)

    return make


@pytest.fixture
def build(deep_cfg, build_seeded):
    """``build(TRAINER, KEY, VALUE, ..., output_dir=None)``: a seeded trainer."""
    return lambda trainer, *opts, output_dir=None: build_seeded(
        deep_cfg(trainer, *opts, output_dir=output_dir))


def frozen_clip_keys(clip_model, n_cls=4, n_ctx=2, prefix_tokens=True):
    """The frozen keys upstream's CustomCLIP state dict carries (fp16)."""
    state = OrderedDict()
    for k, v in clip_model.visual.state_dict().items():
        state[f"image_encoder.{k}"] = v
    for k, v in clip_model.transformer.state_dict().items():
        state[f"text_encoder.transformer.{k}"] = v
    state["text_encoder.positional_embedding"] = clip_model.positional_embedding.data
    for k, v in clip_model.ln_final.state_dict().items():
        state[f"text_encoder.ln_final.{k}"] = v
    state["text_encoder.text_projection"] = clip_model.text_projection.data
    state["logit_scale"] = clip_model.logit_scale.data
    if prefix_tokens:
        state["prompt_learner.token_prefix"] = torch.randn(n_cls, 1, D_T)
        state["prompt_learner.token_suffix"] = torch.randn(n_cls, 77 - 1 - n_ctx, D_T)
    return OrderedDict((k, v.detach().clone().half()) for k, v in state.items())


def write_upstream(directory, folder, state, epoch=5):
    """A checkpoint directory as upstream (Dassl) writes it: ``<folder>/model.pth.tar-<epoch>``."""
    path = directory / folder
    path.mkdir(parents=True)
    ckpt = {"state_dict": state, "epoch": epoch,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0]}]},
            "scheduler": {"last_epoch": epoch}, "val_result": None}
    torch.save(ckpt, path / f"model.pth.tar-{epoch}")
    (path / "checkpoint").write_text(f"model.pth.tar-{epoch}\n")
    return str(directory)


@pytest.fixture(scope="session")
def dims():
    """The tiny CLIP's sizes: d_t, d_v, embed, text_layers, vision_layers."""
    return types.SimpleNamespace(d_t=D_T, d_v=D_V, embed=EMBED, text_layers=L_T, vision_layers=L_V)


@pytest.fixture
def upstream():
    """``write(dir, folder, state, epoch)`` and ``frozen(clip, n_cls, n_ctx, prefix_tokens)``."""
    return types.SimpleNamespace(write=write_upstream, frozen=frozen_clip_keys)
