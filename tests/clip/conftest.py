"""Tiny random CLIP models (OpenAI state-dict format) shared by the CLIP tests."""
from typing import Callable, Dict

import pytest
import torch

from dassl_lite.clip import CLIP, CLIPConfig, build_model, tokenize

# ViT: 2 heads on both sides (width 128), 3 layers, 32 px images in 8 px patches (grid 4).
TINY_VIT = CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=3, vision_width=128,
                      vision_patch_size=8, vision_heads=2, context_length=77, vocab_size=49408,
                      transformer_width=128, transformer_heads=2, transformer_layers=3)
# ResNet: stem width 16 (attention pool width 512, 8 heads), 64 px images (grid 2).
TINY_RN = CLIPConfig(embed_dim=32, image_resolution=64, vision_layers=(1, 2, 1, 1), vision_width=16,
                     vision_patch_size=None, vision_heads=8, context_length=77, vocab_size=49408,
                     transformer_width=64, transformer_heads=1, transformer_layers=2)

PROMPTS = ["a photo of a cat.", "a photo of a golden retriever, a type of pet.", "x",
           "a centered satellite photo of annual crop land."]


def random_state_dict(config: CLIPConfig, seed: int = 0) -> Dict[str, torch.Tensor]:
    """State dict of a random CLIP with non-trivial biases, norms and BN statistics, rounded to
    values that float16 represents exactly (open_clip's OpenAI builder casts to float16)."""
    torch.manual_seed(seed)
    state = CLIP(config).state_dict()
    for name, value in state.items():
        if value.is_floating_point() and value.dim() <= 1 and name != "logit_scale":
            value = value + 0.1 * torch.randn_like(value)
            value = value.abs() if name.endswith("running_var") else value
        state[name] = value.half().float() if value.is_floating_point() else value
    return state


@pytest.fixture(scope="session")
def vit_state_dict() -> Dict[str, torch.Tensor]:
    return random_state_dict(TINY_VIT)


@pytest.fixture(scope="session")
def rn_state_dict() -> Dict[str, torch.Tensor]:
    return random_state_dict(TINY_RN, seed=1)


@pytest.fixture(scope="session")
def vit_model(vit_state_dict) -> CLIP:
    """Shared tiny ViT CLIP (eval mode); tests must not modify it."""
    return build_model(vit_state_dict)


@pytest.fixture(scope="session")
def rn_model(rn_state_dict) -> CLIP:
    return build_model(rn_state_dict)


@pytest.fixture(scope="session")
def text_tokens() -> torch.Tensor:
    return tokenize(PROMPTS)


@pytest.fixture(scope="session")
def tiny_configs() -> Dict[str, CLIPConfig]:
    return {"vit": TINY_VIT, "rn": TINY_RN}


@pytest.fixture(scope="session")
def make_images() -> Callable[..., torch.Tensor]:
    """``make_images(model, batch=3, seed=0)``: random images of the model's input size."""
    def make(model: CLIP, batch: int = 3, seed: int = 0) -> torch.Tensor:
        size = model.visual.input_resolution
        return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return make
