"""Low-rank adapters (LoRA, Hu et al. 2021) on the attention of dassl_lite's CLIP encoders, as
CLIP-LoRA (Zanella & Ben Ayed, CVPRW 2024; MaxZanella/CLIP-LoRA ``loralib``) places them.

The CLIP core computes q, k and v with one fused ``in_proj_weight`` [3W, W] and then
``F.scaled_dot_product_attention``. :class:`LoRASelfAttention` wraps an existing
:class:`~dassl_lite.clip.transformer.MultiheadSelfAttention` (PEFT-style: it holds the very same
frozen parameters under the same names, so the CLIP state dict keeps OpenAI's keys) and adds
``scaling * B A dropout(x)`` to the slices of the projections chosen in ``params``
(``q``, ``k``, ``v`` of ``in_proj``; ``o`` = ``out_proj``), with upstream's details:

- ``A`` [r, W] initialised as ``nn.Linear`` weights (kaiming uniform, a = sqrt 5), ``B`` [W, r]
  zeros, so training starts from CLIP itself;
- ``scaling = alpha / sqrt(r)`` (upstream's ``loralib/layers.py``; not LoRA's alpha / r);
- dropout on the LoRA branch's input only, in training mode.

The LoRA tensors are named as upstream's (``q_proj.w_lora_A``, ``q_proj.w_lora_B``, ...,
``proj.w_lora_*`` for ``o``) and are the only trainable parameters.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from dassl_lite.clip.transformer import MultiheadSelfAttention, SelfAttentionBase, Transformer
from dassl_lite.config import ConfigError

LORA_PARAMS = ("q", "k", "v", "o")
ENCODERS = ("text", "vision", "both")
# Upstream's positions for 12-layer encoders, as fractions of the depth [start, stop)
# (top1/top2/top3/top: the last 1, 2, 3, 1 layers).
POSITIONS = {"bottom": (0, 1 / 3), "mid": (1 / 3, 2 / 3), "up": (2 / 3, 1), "half-up": (0.5, 1),
             "half-bottom": (0, 0.5), "all": (0, 1)}
TOP_POSITIONS = {"top": 1, "top1": 1, "top2": 2, "top3": 3}


def lora_layers(position: str, depth: int) -> List[int]:
    """Block indices of ``position`` in an encoder of ``depth`` blocks (upstream's lists for
    depth 12, e.g. ``bottom`` = 0-3, ``half-up`` = 6-11, ``top3`` = 9-11; thirds, halves and
    last-k for other depths)."""
    if position in TOP_POSITIONS:
        return list(range(max(0, depth - TOP_POSITIONS[position]), depth))
    if position not in POSITIONS:
        raise ConfigError(f"LoRA position must be one of {', '.join([*POSITIONS, *TOP_POSITIONS])}; "
                          f"got {position!r}")
    start, stop = POSITIONS[position]
    return list(range(round(start * depth), round(stop * depth)))


class LoRAFactors(nn.Module):
    """``scaling * B A dropout(x)``: the low-rank update of one W_out x W_in projection."""

    def __init__(self, in_features: int, out_features: int, r: int, alpha: float, dropout: float):
        super().__init__()
        if r < 1:
            raise ConfigError(f"LoRA rank must be >= 1; got {r}")
        self.w_lora_A = nn.Parameter(torch.empty(r, in_features))
        self.w_lora_B = nn.Parameter(torch.zeros(out_features, r))
        nn.init.kaiming_uniform_(self.w_lora_A, a=math.sqrt(5))
        self.scaling = alpha / math.sqrt(r)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.w_lora_A.to(x.dtype), self.w_lora_B.to(x.dtype)
        return F.linear(F.linear(self.dropout(x), a), b) * self.scaling


class LoRASelfAttention(SelfAttentionBase):
    """An existing self-attention module with LoRA on the projections named in ``params``."""

    def __init__(self, attn: MultiheadSelfAttention, params: Sequence[str], r: int, alpha: float,
                 dropout: float):
        super().__init__()
        unknown = [p for p in params if p not in LORA_PARAMS]
        if unknown or not params:
            raise ConfigError(f"LoRA params must be a non-empty subset of "
                              f"{', '.join(LORA_PARAMS)}; got {list(params)}")
        self.width, self.heads = attn.width, attn.heads
        self.in_proj_weight = attn.in_proj_weight  # the frozen tensors themselves, not copies
        self.in_proj_bias = attn.in_proj_bias
        self.out_proj = attn.out_proj
        names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "proj"}
        for p in LORA_PARAMS:
            factors = LoRAFactors(self.width, self.width, r, alpha, dropout) if p in params else None
            setattr(self, names[p], factors)

    def _add(self, y: Tensor, factors: Optional[LoRAFactors], x: Tensor) -> Tensor:
        return y if factors is None else y + factors(x)

    def qkv(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        n, length, width = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).split(width, dim=-1)
        q, k, v = (self._add(t, f, x).view(n, length, self.heads, width // self.heads).transpose(1, 2)
                   for t, f in ((q, self.q_proj), (k, self.k_proj), (v, self.v_proj)))
        return q, k, v

    def project_out(self, out: Tensor) -> Tensor:
        return self._add(self.out_proj(out), self.proj, out)


def add_lora(transformer: Transformer, layers: Sequence[int], params: Sequence[str], r: int,
             alpha: float, dropout: float) -> List[LoRASelfAttention]:
    """Replace the attention of blocks ``layers`` of ``transformer`` by LoRA-wrapped ones."""
    wrapped = []
    for i in layers:
        block = transformer.resblocks[i]
        if not isinstance(block.attn, MultiheadSelfAttention):
            raise ConfigError(f"block {i} already has LoRA or an unknown attention "
                              f"({type(block.attn).__name__})")
        block.attn = LoRASelfAttention(block.attn, params, r, alpha, dropout).to(
            block.attn.in_proj_weight.device)
        wrapped.append(block.attn)
    return wrapped
