"""CLIP's Vision Transformer image encoder with shallow and deep visual prompts."""
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .transformer import LayerNorm, Transformer, as_batched_tokens

__all__ = ["VisionTransformer", "check_image_size", "num_prompt_tokens"]


def check_image_size(images: Tensor, resolution: int, backbone: str) -> None:
    """Raise ``ValueError`` unless ``images`` is ``[B, 3, resolution, resolution]``."""
    if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (resolution,) * 2:
        raise ValueError(f"{backbone} expects images of shape [B, 3, {resolution}, {resolution}]; "
                         f"got {list(images.shape)} "
                         f"(set INPUT.SIZE to ({resolution}, {resolution}))")


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
    """

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

    def embed(self, images: Tensor) -> Tensor:
        """[B, 3, R, R] -> [B, 1 + grid**2, width]: CLS + patch tokens plus positional embedding."""
        check_image_size(images, self.input_resolution, f"ViT (patch {self.patch_size})")
        x = self.conv1(images.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)

    def forward(self, images: Tensor, prompts: Optional[Tensor] = None,
                deep_prompts: Optional[Sequence[Tensor]] = None) -> Tensor:
        """Encode images [B, 3, R, R] to [B, output_dim].

        ``prompts``: shallow prompt tokens [n_ctx, width] or [B, n_ctx, width] (None or n_ctx = 0
        for none). ``deep_prompts``: entry k ([n_ctx, width] or [B, n_ctx, width]) replaces the
        prompt tokens at the input of layer k+1; needs shallow prompts of the same n_ctx.
        """
        x = self.embed(images)
        n_ctx = num_prompt_tokens(prompts)
        if n_ctx:
            prompts = as_batched_tokens(prompts, x.shape[0], self.width, "prompts")
            x = torch.cat([x, prompts.to(x.dtype)], dim=1)
        deep = [] if deep_prompts is None else list(deep_prompts)
        self._check_deep_prompts(deep, n_ctx)
        x = self.ln_pre(x)
        x = self.transformer(x, deep, prompt_start=x.shape[1] - n_ctx)
        return self.ln_post(x[:, 0]) @ self.proj

    @staticmethod
    def _check_deep_prompts(deep: Sequence[Tensor], n_ctx: int) -> None:
        for k, entry in enumerate(deep):
            if n_ctx == 0 or num_prompt_tokens(entry) != n_ctx:
                raise ValueError(
                    f"vision deep_prompts[{k}] must replace the {n_ctx} shallow prompt tokens "
                    f"(pass shallow prompts with the same n_ctx); got shape {list(entry.shape)}")
