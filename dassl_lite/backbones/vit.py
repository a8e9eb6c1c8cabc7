"""A supervised (non-CLIP) ViT image backbone built from timm, with VPT's prompt hooks.

:class:`PromptableViT` wraps a ``timm.models.vision_transformer.VisionTransformer`` (class token,
no head) and returns the class token after the final LayerNorm, as the VPT paper and its reference
code (KMnP/vpt) read it. Prompts enter the way the paper puts them:

- shallow: ``[CLS, P_1..P_n, patches]`` after the patch embedding and the positional embedding
  (prompts get no positional embedding);
- deep: the prompt positions ``1 .. n`` are replaced at the input of block ``deep_start + j``
  by ``deep_prompts[j]`` (default ``deep_start`` 1: the blocks after the shallow set);
- deep without shallow prompts (KMnP/vpt's ``REVERSE_DEEP``): the sequence stays
  ``[CLS, patches]`` until block ``deep_start``, where positions ``1 .. n`` are replaced, i.e.
  the outputs of the first ``n`` patch tokens are overwritten by the prompts (the length stays
  ``1 + patches``), exactly as KMnP/vpt's ``forward_reverse_deep_prompt`` does.

:meth:`PromptableViT.tokens` gives the whole normalised sequence (for pooling other than the
class token); ``forward`` its class token.

timm is imported inside the functions that build a model, so importing this module is cheap and
never touches the network.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ..errors import DasslLiteError

__all__ = ["ViTArch", "ARCHS", "PromptableViT", "build_timm_vit"]


@dataclass(frozen=True)
class ViTArch:
    """The shape of a ViT (what a checkpoint must match)."""

    patch_size: int  # square patches, pixels
    width: int  # token dimension D
    depth: int  # transformer blocks
    heads: int  # attention heads
    mlp_dim: int  # hidden size of each block's MLP
    image_size: int  # input size the weights were trained at (positional-embedding grid)


# The architectures of Google's released ViTs (and of the shipped toy one).
ARCHS: Dict[str, ViTArch] = {
    "ViT-B/8": ViTArch(8, 768, 12, 12, 3072, 224),
    "ViT-B/16": ViTArch(16, 768, 12, 12, 3072, 224),
    "ViT-B/32": ViTArch(32, 768, 12, 12, 3072, 224),
    "ViT-L/16": ViTArch(16, 1024, 24, 16, 4096, 224),
    "ViT-L/32": ViTArch(32, 1024, 24, 16, 4096, 224),
    "ViT-H/14": ViTArch(14, 1280, 32, 16, 5120, 224),
    "ToyViT": ViTArch(16, 192, 4, 3, 768, 64),
}


def build_timm_vit(arch: ViTArch, image_size: int) -> nn.Module:
    """A timm ``VisionTransformer`` of ``arch`` for ``image_size`` inputs: class token, no head,
    LayerNorm eps 1e-6 (Google's), qkv bias (random weights; load them afterwards)."""
    from timm.models.vision_transformer import VisionTransformer

    if image_size % arch.patch_size:
        raise DasslLiteError(f"INPUT.SIZE {image_size} must be a multiple of the patch size "
                             f"{arch.patch_size} of the ViT")
    return VisionTransformer(img_size=image_size, patch_size=arch.patch_size,
                             embed_dim=arch.width, depth=arch.depth, num_heads=arch.heads,
                             mlp_ratio=arch.mlp_dim / arch.width, qkv_bias=True, num_classes=0,
                             class_token=True, global_pool="token")


class PromptableViT(nn.Module):
    """A timm ViT returning the normalised class token [B, width], with optional VPT prompts."""

    def __init__(self, vit: nn.Module, arch: ViTArch, name: str = ""):
        super().__init__()
        self.vit = vit
        self.arch = arch
        self.name = name or "ViT"

    @property
    def width(self) -> int:
        return self.arch.width

    @property
    def depth(self) -> int:
        return self.arch.depth

    @property
    def patch_size(self) -> int:
        return self.arch.patch_size

    @property
    def dtype(self) -> torch.dtype:
        return self.vit.cls_token.dtype

    def embed(self, images: Tensor) -> Tensor:
        """[CLS, patches] + positional embedding, as timm's ``forward_features`` builds them."""
        vit = self.vit
        x = vit.patch_embed(images.to(self.dtype))
        cls = vit.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        if x.shape[1] != vit.pos_embed.shape[1]:
            raise DasslLiteError(f"{self.name}: {x.shape[1] - 1} patches for images of size "
                                 f"{tuple(images.shape[-2:])}, but the positional embedding has "
                                 f"{vit.pos_embed.shape[1] - 1}; set INPUT.SIZE to the size the "
                                 f"backbone was built for")
        x = vit.pos_drop(x + vit.pos_embed)
        return vit.norm_pre(x)

    def tokens(self, images: Tensor, prompts: Optional[Tensor] = None,
               deep_prompts: Sequence[Tensor] = (), deep_start: int = 1) -> Tensor:
        """The whole sequence after the final norm [B, T, width]. ``prompts`` [n, D] or
        [B, n, D] join after CLS; ``deep_prompts[j]`` replaces positions ``1 .. n`` at the input
        of block ``deep_start + j`` (module docstring)."""
        x = self.embed(images)
        if prompts is not None:
            n = prompts.shape[-2]
            x = torch.cat([x[:, :1], _batched(prompts, x), x[:, 1:]], dim=1)
            if deep_prompts and deep_start < 1:
                raise DasslLiteError(f"deep_start {deep_start} would replace the shallow prompts "
                                     f"before block 0 sees them; use >= 1")
        elif deep_prompts:
            n = deep_prompts[0].shape[-2]
            if deep_start < 0:
                raise DasslLiteError(f"deep_start must be >= 0; got {deep_start}")
        if deep_prompts and deep_start + len(deep_prompts) > self.depth:
            raise DasslLiteError(f"{len(deep_prompts)} deep prompt sets for a ViT of "
                                 f"{self.depth} blocks; at most {self.depth - deep_start} from "
                                 f"block {deep_start} on")
        for i, block in enumerate(self.vit.blocks):
            j = i - deep_start
            if 0 <= j < len(deep_prompts):
                x = torch.cat([x[:, :1], _batched(deep_prompts[j], x), x[:, 1 + n:]], dim=1)
            x = block(x)
        return self.vit.norm(x)

    def forward(self, images: Tensor, prompts: Optional[Tensor] = None,
                deep_prompts: Sequence[Tensor] = (), deep_start: int = 1) -> Tensor:
        """The class token after the final norm [B, width] (arguments as :meth:`tokens`)."""
        return self.tokens(images, prompts, deep_prompts, deep_start)[:, 0]


def _batched(prompts: Tensor, x: Tensor) -> Tensor:
    """``prompts`` as [B, n, D] in ``x``'s dtype."""
    prompts = prompts.to(x.dtype)
    return prompts.expand(x.shape[0], -1, -1) if prompts.dim() == 2 else prompts
