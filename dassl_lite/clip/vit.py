"""CLIP's Vision Transformer image encoder with shallow and deep visual prompts."""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .transformer import LayerNorm, Transformer, as_batched_tokens

__all__ = ["VisionFeatures", "VisionTransformer", "check_image_size",
           "interpolate_positional_embedding", "num_prompt_tokens", "POS_INTERPOLATION_MODES"]

# Modes of ``VisionTransformer.pos_interpolation`` (None: inputs must match the stored grid).
# "bicubic_antialias": open_clip's ``resize_pos_embed`` (bicubic with ``antialias=True``, whose
# kernel differs from plain bicubic's: a = -0.5 instead of -0.75, also when enlarging).
POS_INTERPOLATION_MODES = ("bilinear", "bicubic", "bicubic_antialias")


def check_image_size(images: Tensor, resolution: int, backbone: str) -> None:
    """Raise ``ValueError`` unless ``images`` is ``[B, 3, resolution, resolution]``."""
    if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (resolution,) * 2:
        raise ValueError(f"{backbone} expects images of shape [B, 3, {resolution}, {resolution}]; "
                         f"got {list(images.shape)} "
                         f"(set INPUT.SIZE to ({resolution}, {resolution}))")


def interpolate_positional_embedding(pos: Tensor, grid: Tuple[int, int],
                                     mode: str = "bicubic") -> Tensor:
    """Resize a ViT positional embedding ``[1 + g*g, width]`` to ``[1 + h*w, width]``.

    The CLS row is kept; the ``g x g`` patch rows are resized as an image to ``grid = (h, w)``
    with ``F.interpolate(mode, align_corners=False)`` (AF-CLIP / AnomalyCLIP use bilinear, timm
    bicubic, open_clip ``bicubic_antialias``). Returns a new tensor; ``pos`` is never modified.
    The same grid returns ``pos``.
    """
    if mode not in POS_INTERPOLATION_MODES:
        raise ValueError(f"positional-embedding interpolation must be one of "
                         f"{POS_INTERPOLATION_MODES}; got {mode!r}")
    old = round((pos.shape[0] - 1) ** 0.5)
    if pos.dim() != 2 or old * old + 1 != pos.shape[0]:
        raise ValueError(f"positional embedding must have shape [1 + g*g, width]; "
                         f"got {list(pos.shape)}")
    if tuple(grid) == (old, old):
        return pos
    patches = pos[1:].float().reshape(1, old, old, -1).permute(0, 3, 1, 2)
    antialias = mode == "bicubic_antialias"
    patches = F.interpolate(patches, size=tuple(grid), mode="bicubic" if antialias else mode,
                            align_corners=False, antialias=antialias)
    patches = patches.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(pos.dtype)
    return torch.cat([pos[:1], patches], dim=0)


@dataclass
class VisionFeatures:
    """What :meth:`VisionTransformer.forward_features` returns.

    ``pooled``: the usual image feature ``ln_post(CLS) @ proj`` [B, output_dim];
    ``tokens``: the raw residual stream after each requested block, [B, 1 + h*w (+ n_ctx), width]
    (CLS first, patches row-major, then any prompt tokens), before ``ln_post``;
    ``grid``: the patch grid ``(h, w)`` of this input.
    """

    pooled: Tensor
    tokens: List[Tensor]
    grid: Tuple[int, int]


def num_prompt_tokens(prompts: Optional[Tensor]) -> int:
    """Number of prompt tokens in ``prompts`` ([n, D] or [B, n, D]); 0 for None or empty."""
    if prompts is None or prompts.numel() == 0:
        return 0
    if prompts.dim() not in (2, 3):
        raise ValueError(f"prompts must have shape [n_ctx, width] or [B, n_ctx, width]; "
                         f"got {list(prompts.shape)}")
    return prompts.shape[-2]


class VisionTransformer(nn.Module):
    """OpenAI CLIP ViT: patch conv -> [CLS, patches] + positional -> ln_pre -> transformer ->
    ln_post(CLS) @ proj.

    Prompted forward, matching upstream MaPLe (``VisionTransformer_MaPLe``) and IVLP/VPT
    (``VisionTransformer`` with ``VPT_shallow``) of multimodal-prompt-learning:

    - shallow prompts are appended at the END of the sequence, after the positional embedding
      has been added to [CLS, patches] (prompts get no positional embedding), and ``ln_pre`` is
      applied to the whole sequence including the prompt tokens;
    - deep prompt entry k replaces the LAST ``n_ctx`` tokens at the input of layer k+1; deep
      prompts get neither a positional embedding nor ``ln_pre``; layers beyond the deep prompts
      keep the tokens produced by the previous layer;
    - the output is ``ln_post`` of the CLS token, projected by ``proj``.

    One deliberate difference: upstream casts prompts with ``.half()`` even for fp32 models
    (rounding them to fp16 precision); here prompts are cast to the model's dtype.

    Hooks for dense tasks (anomaly maps, segmentation):

    - ``pos_interpolation`` (None by default: the input must be ``input_resolution`` square):
      set to ``"bilinear"`` or ``"bicubic"`` to accept any ``[B, 3, H, W]`` whose sides are
      multiples of the patch size; the positional embedding is then resized on every forward
      (:func:`interpolate_positional_embedding`), the stored parameter is never changed;
    - :meth:`forward_features` returns the tokens after chosen blocks as well;
    - :meth:`project_tokens` maps tokens to the joint space (``ln_post(t) @ proj``) as CLS is.
    """

    pos_interpolation: Optional[str] = None

    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int,
                 heads: int, output_dim: int):
        super().__init__()
        if input_resolution % patch_size:
            raise ValueError(f"input_resolution must be a multiple of patch_size; got "
                             f"{input_resolution} and {patch_size}")
        self.input_resolution = input_resolution
        self.patch_size = patch_size
        self.grid_size = input_resolution // patch_size
        self.width = width
        self.layers = layers
        self.heads = heads
        self.output_dim = output_dim
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(
            scale * torch.randn(self.grid_size ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def input_grid(self, images: Tensor) -> Tuple[int, int]:
        """The patch grid ``(h, w)`` of ``images``; raise ``ValueError`` for a size it refuses."""
        backbone = f"ViT (patch {self.patch_size})"
        if self.pos_interpolation is None:
            check_image_size(images, self.input_resolution, backbone)
            return self.grid_size, self.grid_size
        if self.pos_interpolation not in POS_INTERPOLATION_MODES:
            raise ValueError(f"pos_interpolation must be None or one of "
                             f"{POS_INTERPOLATION_MODES}; got {self.pos_interpolation!r}")
        p = self.patch_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] % p or images.shape[3] % p:
            raise ValueError(f"{backbone} with positional-embedding interpolation expects images "
                             f"[B, 3, H, W] with H and W multiples of {p}; "
                             f"got {list(images.shape)}")
        return images.shape[2] // p, images.shape[3] // p

    def embed(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, 1 + h*w, width]: CLS + patch tokens plus positional embedding."""
        grid = self.input_grid(images)
        x = self.conv1(images.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        pos = self.positional_embedding
        if grid != (self.grid_size, self.grid_size):
            pos = interpolate_positional_embedding(pos, grid, self.pos_interpolation)
        return torch.cat([cls, x], dim=1) + pos.to(x.dtype)

    def forward(self, images: Tensor, prompts: Optional[Tensor] = None,
                deep_prompts: Optional[Sequence[Tensor]] = None) -> Tensor:
        """Encode images [B, 3, R, R] to [B, output_dim].

        ``prompts``: shallow prompt tokens [n_ctx, width] or [B, n_ctx, width] (None or n_ctx = 0
        for none). ``deep_prompts``: entry k ([n_ctx, width] or [B, n_ctx, width]) replaces the
        prompt tokens at the input of layer k+1; needs shallow prompts of the same n_ctx.
        """
        return self.forward_features(images, (), prompts, deep_prompts).pooled

    def forward_features(self, images: Tensor, layers: Sequence[int],
                         prompts: Optional[Tensor] = None,
                         deep_prompts: Optional[Sequence[Tensor]] = None) -> VisionFeatures:
        """As :meth:`forward`, also returning the tokens after the blocks in ``layers``.

        ``layers`` holds 1-based block numbers (AF-CLIP's ``--feature_layers 6 12 18 24`` on
        ViT-L/14); each entry is the raw residual stream after that block, CLS included, before
        ``ln_post`` (see :class:`VisionFeatures`). Each entry is its own tensor, so layers never
        alias one another.
        """
        x = self.embed(images)
        grid = self.input_grid(images)
        n_ctx = num_prompt_tokens(prompts)
        if n_ctx:
            prompts = as_batched_tokens(prompts, x.shape[0], self.width, "prompts")
            x = torch.cat([x, prompts.to(x.dtype)], dim=1)
        deep = [] if deep_prompts is None else list(deep_prompts)
        self._check_deep_prompts(deep, n_ctx)
        x = self.ln_pre(x)
        x, tokens = self.transformer.forward_collect(x, list(layers), deep,
                                                     prompt_start=x.shape[1] - n_ctx)
        return VisionFeatures(self.ln_post(x[:, 0]) @ self.proj, tokens, grid)

    def project_tokens(self, tokens: Tensor) -> Tensor:
        """Tokens [..., width] -> [..., output_dim] through ``ln_post`` and ``proj`` (as CLS)."""
        return self.ln_post(tokens) @ self.proj.to(tokens.dtype)

    @staticmethod
    def _check_deep_prompts(deep: Sequence[Tensor], n_ctx: int) -> None:
        for k, entry in enumerate(deep):
            if n_ctx == 0 or num_prompt_tokens(entry) != n_ctx:
                raise ValueError(
                    f"vision deep_prompts[{k}] must replace the {n_ctx} shallow prompt tokens "
                    f"(pass shallow prompts with the same n_ctx); got shape {list(entry.shape)}")
