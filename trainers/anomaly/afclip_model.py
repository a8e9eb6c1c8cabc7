"""AF-CLIP's pieces as plain modules and functions (no trainer, no config).

- :func:`gaussian_kernel` / :func:`aggregate_neighbors`: every patch token replaced by a
  Gaussian-weighted (sigma 4, normalised) sum over its r x r neighbourhood with zero padding, for
  each r in the aggregation sizes (r = 1 is the identity); the CLS token passes unchanged.
  Upstream uses ``F.unfold`` (an r*r times larger copy of the tokens); a depthwise convolution
  with the same kernel gives the same sums without that copy.
- :class:`Adaptor`: LayerNorm -> q/k/v (no bias, 8 heads x 64) -> attention -> ``to_out``, with
  NO residual. Parameter names equal upstream's ``clip.adaptor.Adaptor`` state dict
  (``attention.norm.*``, ``attention.attn.to_{q,k,v}.weight``, ``attention.attn.to_out.0.*``).
  Attention runs through ``F.scaled_dot_product_attention`` (upstream materialises the
  [B*8, 1370, 1370] probabilities: about 6 GB at 518 px for a batch of 8).
- :class:`StatePrompts`: ``PROMPT_LEN`` vectors (N(0, 0.01)) before SOT of "without defect." and
  "with defect." (:meth:`dassl_lite.clip.CLIP.encode_text_prefixed`).
- :class:`AFCLIPModel`: blocks -> aggregation -> adaptor -> ``ln_post`` -> ``proj`` -> logits
  against the two state features summed over the maps / temperature -> softmax; image score =
  abnormal probability at CLS, anomaly map = abnormal probability at the patches.
- :class:`MemoryBank`: raw aggregated block tokens of k normal images per category; patch score
  = mean over maps of ``min_bank (1 - cos) / 2``.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dassl_lite.clip import CLIP, tokenize

STATE_TEXTS = ("without defect.", "with defect.")


def gaussian_kernel(size: int, sigma: float) -> Tensor:
    """[size, size] Gaussian weights centred on the middle cell, summing to 1."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    grid = x[:, None] ** 2 + x[None, :] ** 2
    kernel = torch.exp(-grid / (2 * sigma ** 2))
    return kernel / kernel.sum()


def grid_side(num_patches: int) -> int:
    """Side of the square patch grid holding ``num_patches`` tokens."""
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"expected a square patch grid; got {num_patches} patch tokens")
    return side


def aggregate_neighbors(tokens: Tensor, size: int, sigma: float) -> Tensor:
    """[B, 1 + G*G, C] -> same shape; patches smoothed over size x size (zero padding)."""
    if size == 1:
        return tokens
    if size % 2 == 0 or size < 1:
        raise ValueError(f"aggregation sizes must be odd and positive; got {size}")
    b, n, c = tokens.shape
    side = grid_side(n - 1)
    patches = tokens[:, 1:].transpose(1, 2).reshape(b, c, side, side)
    kernel = gaussian_kernel(size, sigma).to(tokens).expand(c, 1, size, size)
    patches = F.conv2d(patches, kernel, padding=size // 2, groups=c)
    return torch.cat([tokens[:, :1], patches.flatten(2).transpose(1, 2)], dim=1)


def aggregate_all(blocks: Sequence[Tensor], sizes: Sequence[int], sigma: float) -> List[Tensor]:
    """Layer-major list of ``len(blocks) * len(sizes)`` token maps (upstream's order)."""
    return [aggregate_neighbors(t, r, sigma) for t in blocks for r in sizes]


class _SelfAttention(nn.Module):
    """Upstream ``CrossAttention`` used as self-attention, computed by SDPA."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0))

    def split(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, -1).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.split(self.to_q(x)), self.split(self.to_k(x)), self.split(self.to_v(x))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).flatten(2))


class _Block(nn.Module):
    """``attn(norm(x))``: no residual, no MLP (upstream ``BasicTransformerBlock``)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.attn = _SelfAttention(dim, heads, head_dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(self.norm(x))


class Adaptor(nn.Module):
    """AF-CLIP's anomaly-focused adaptor over [B, N, width] tokens (state-dict compatible with
    upstream ``clip.adaptor.Adaptor``)."""

    def __init__(self, width: int, heads: int = 8, head_dim: int = 64):
        super().__init__()
        self.attention = _Block(width, heads, head_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.attention(tokens)


class StatePrompts(nn.Module):
    """``state_prompt_embedding`` [1, P, width] shared by the two state texts, before SOT."""

    def __init__(self, clip_model: CLIP, prompt_len: int):
        super().__init__()
        if prompt_len < 0:
            raise ValueError(f"prompt length must be >= 0; got {prompt_len}")
        width = clip_model.transformer.width
        self.state_prompt_embedding = nn.Parameter(torch.empty(1, prompt_len, width))
        nn.init.normal_(self.state_prompt_embedding, std=0.01)
        self.register_buffer("tokens", tokenize(list(STATE_TEXTS)), persistent=False)

    def forward(self, clip_model: CLIP) -> Tensor:
        """Normalised state features [2, embed_dim]: row 0 normal, row 1 abnormal."""
        feats = clip_model.encode_text_prefixed(self.state_prompt_embedding[0], self.tokens)
        return F.normalize(feats.float(), dim=-1)


class AFCLIPLearner(nn.Module):
    """What AF-CLIP trains and checkpoints: the state prompt and the adaptor."""

    def __init__(self, clip_model: CLIP, prompt_len: int, heads: int = 8, head_dim: int = 64):
        super().__init__()
        self.prompt = StatePrompts(clip_model, prompt_len)
        self.adaptor = Adaptor(clip_model.visual.width, heads, head_dim)


class AFCLIPModel(nn.Module):
    """Frozen CLIP + :class:`AFCLIPLearner`; see the module docstring for the maths.

    ``forward(images)`` returns a dict: ``image_score`` [B], ``anomaly_map`` [B, G, G] (abnormal
    probability per patch), ``tokens`` (the projected token maps, for the alignment loss).
    """

    def __init__(self, clip_model: CLIP, learner: AFCLIPLearner, layers: Sequence[int],
                 sizes: Sequence[int], sigma: float, temperature: float):
        super().__init__()
        clip_model.visual.pos_interpolation = "bilinear"  # upstream resizes it bilinearly
        self.clip = clip_model
        self.learner = learner
        self.layers = list(layers)
        self.sizes = list(sizes)
        self.sigma = sigma
        self.temperature = temperature
        self._text_cache: Optional[Tensor] = None

    def block_tokens(self, images: Tensor, layers: Sequence[int]) -> List[Tensor]:
        """Raw residual stream [B, 1 + G*G, width] after each block in ``layers`` (1-based)."""
        return self.clip.visual.forward_features(images, layers).tokens

    def text_features(self) -> Tensor:
        """The two state features (cached between :meth:`cache_text` and :meth:`clear_text_cache`)."""
        if self._text_cache is not None:
            return self._text_cache
        return self.learner.prompt(self.clip)

    def cache_text(self) -> None:
        """Compute the state features once (evaluation)."""
        with torch.no_grad():
            self._text_cache = self.learner.prompt(self.clip)

    def clear_text_cache(self) -> None:
        self._text_cache = None

    def project(self, tokens: Tensor) -> Tensor:
        """adaptor -> CLIP's frozen ``ln_post`` -> ``proj``."""
        visual = self.clip.visual
        adapted = self.learner.adaptor(tokens.float())
        return visual.ln_post(adapted.to(visual.proj.dtype)) @ visual.proj

    def forward(self, images: Tensor, extra_layers: Sequence[int] = ()) -> Dict[str, object]:
        """Scores of ``images``; ``extra_layers`` (e.g. the memory bank's) are returned raw as
        ``blocks`` {block: tokens} from the same encoder pass."""
        wanted = sorted(set(self.layers) | set(extra_layers))
        with torch.no_grad():
            blocks = dict(zip(wanted, self.block_tokens(images, wanted)))
            maps = aggregate_all([blocks[i] for i in self.layers], self.sizes, self.sigma)
        projected = [self.project(t) for t in maps]
        text = self.text_features()
        logits = sum(F.normalize(p.float(), dim=-1) @ text.t() for p in projected)
        prob = torch.softmax(logits / self.temperature, dim=-1)[..., 1]
        side = grid_side(prob.shape[1] - 1)
        return {"image_score": prob[:, 0], "anomaly_map": prob[:, 1:].reshape(-1, side, side),
                "tokens": projected, "blocks": {i: blocks[i] for i in extra_layers}}


class MemoryBank(nn.Module):
    """Few-shot memory of raw (un-adapted) aggregated block tokens of normal images, one bank
    per category; ``blocks`` arguments are the raw tokens of ``layers`` in that order."""

    def __init__(self, layers: Sequence[int], sizes: Sequence[int], sigma: float):
        super().__init__()
        self.layers, self.sizes, self.sigma = list(layers), list(sizes), sigma
        self.banks: Dict[str, List[Tensor]] = {}

    def maps(self, blocks: Sequence[Tensor]) -> List[Tensor]:
        """Aggregated, L2-normalised token maps (CLS first)."""
        return [F.normalize(t.float(), dim=-1) for t in aggregate_all(blocks, self.sizes, self.sigma)]

    @torch.no_grad()
    def store(self, category: str, blocks: Sequence[Tensor]) -> None:
        """Keep the patch tokens of k normal images (``blocks`` [k, 1 + L, width] each)."""
        self.banks[category] = [m[:, 1:].reshape(-1, m.shape[-1]) for m in self.maps(blocks)]

    @torch.no_grad()
    def score(self, category: str, blocks: Sequence[Tensor]) -> Dict[str, Tensor]:
        """``anomaly_map`` [B, G, G] (mean over maps of the nearest-bank cosine distance / 2)
        and ``image_score`` [B] (its maximum)."""
        if category not in self.banks:
            raise KeyError(f"no memory bank for category {category!r}; stored: "
                           f"{sorted(self.banks)}")
        total = 0
        for m, bank in zip(self.maps(blocks), self.banks[category]):
            total = total + ((1 - m[:, 1:] @ bank.t()).amin(dim=-1) / 2)
        scores = total / len(self.banks[category])
        side = grid_side(scores.shape[1])
        return {"anomaly_map": scores.reshape(-1, side, side), "image_score": scores.amax(dim=-1)}
