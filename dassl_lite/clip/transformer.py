"""Transformer pieces shared by CLIP's text encoder and its ViT image encoder.

One residual attention block serves every method (zero-shot, CoOp, CoCoOp, MaPLe, IVLP, VPT):
deep prompts are handled by :class:`Transformer`, not by block variants. Parameter names follow
OpenAI's checkpoints (``attn.in_proj_weight``, ``attn.in_proj_bias``, ``attn.out_proj.*``,
``ln_1``, ``mlp.c_fc``, ``mlp.c_proj``, ``ln_2``), so their state dicts load unchanged.
Tensors are batch-first: ``[batch, tokens, width]``.
"""
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LayerNorm", "QuickGELU", "SelfAttentionBase", "MultiheadSelfAttention", "ResidualAttentionBlock",
           "Transformer", "as_batched_tokens", "check_block_numbers", "replace_tokens",
           "use_exact_gelu"]


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in at least float32, returned in the input's dtype (fp16/bf16-safe)."""

    def forward(self, x: Tensor) -> Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        out = F.layer_norm(x.to(dtype), self.normalized_shape, self.weight.to(dtype),
                           self.bias.to(dtype), self.eps)
        return out.to(x.dtype)


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that OpenAI's CLIP models were trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttentionBase(nn.Module):
    """Self-attention computed by ``F.scaled_dot_product_attention`` on batch-first input, from
    a subclass's projections: :meth:`qkv` (``[N, L, width]`` -> q, k, v ``[N, heads, L, d]``) and
    :meth:`project_out`. Attributes ``width`` and ``heads``."""

    def qkv(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def project_out(self, out: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        n, length, width = x.shape
        q, k, v = self.qkv(x)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.project_out(out.transpose(1, 2).reshape(n, length, width))

    def forward_shared_prefix(self, prefix: Tensor, rest: Tensor,
                              group_size: int) -> Tuple[Tensor, Tensor]:
        """Causal self-attention over rows whose first P positions are shared.

        ``prefix`` [G, P, width] holds each group's shared positions once; ``rest`` [G * M, S,
        width] holds every row's remaining positions (rows of group g are ``g*M .. g*M+M-1``,
        M = ``group_size``). Equals causal attention over the full rows ``[prefix; rest]``, with
        the prefix's projections computed once per group instead of once per row.
        """
        (groups, p, width), (n, s, _) = prefix.shape, rest.shape
        qp, kp, vp = self.qkv(prefix)
        qs, ks, vs = self.qkv(rest)
        out_p = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)
        k = torch.cat([_per_row(kp, group_size), ks], dim=2)
        v = torch.cat([_per_row(vp, group_size), vs], dim=2)
        mask = torch.ones(s, p + s, dtype=torch.bool, device=rest.device).tril(diagonal=p)
        out_s = F.scaled_dot_product_attention(qs, k, v, attn_mask=mask)
        return (self.project_out(out_p.transpose(1, 2).reshape(groups, p, width)),
                self.project_out(out_s.transpose(1, 2).reshape(n, s, width)))

    def forward_at(self, prefix: Optional[Tensor], rest: Tensor, group_size: int,
                   idx: Tensor) -> Tensor:
        """Causal self-attention output [N, width] at one position per row only: position
        ``idx[r]`` of ``rest[r]`` (rows split as in :meth:`forward_shared_prefix`; ``prefix``
        ``None`` when nothing is shared). Keys and values are projected at every position the
        query may see, the query only there (the last text layer, where only EOT is read)."""
        n, s, width = rest.shape
        qs, k, v = self.qkv(rest)
        q = qs[torch.arange(n, device=rest.device), :, idx].unsqueeze(2)  # [N, heads, 1, d]
        p = 0
        if prefix is not None:
            p = prefix.shape[1]
            _, kp, vp = self.qkv(prefix)
            k = torch.cat([_per_row(kp, group_size), k], dim=2)
            v = torch.cat([_per_row(vp, group_size), v], dim=2)
        mask = torch.arange(p + s, device=rest.device) <= (p + idx).unsqueeze(1)  # [N, P + S]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return self.project_out(out.reshape(n, width))


def _has_module_hooks(modules: nn.Module) -> bool:
    """Whether forward (pre-)hooks or backward hooks are registered on ``modules`` or any module
    inside, or globally (``torch.nn.modules.module.register_module_forward_hook``, ...): they
    run only when a module is called, so the shortcuts that bypass calls must step aside."""
    from torch.nn.modules import module as torch_module

    kinds = ("forward_hooks", "forward_pre_hooks", "backward_hooks", "backward_pre_hooks")
    if any(getattr(torch_module, f"_global_{k}", None) for k in kinds):
        return True
    return any(getattr(m, f"_{k}", None) for m in modules.modules() for k in kinds)


def _per_row(t: Tensor, group_size: int) -> Tensor:
    """A group's tensor [G, ...] repeated for each of its rows: [G * group_size, ...] (a view)."""
    return t.unsqueeze(1).expand(t.shape[0], group_size, *t.shape[1:]).flatten(0, 1)


class MultiheadSelfAttention(SelfAttentionBase):
    """Self-attention with ``nn.MultiheadAttention``'s parameter layout."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if heads < 1 or width % heads:
            raise ValueError(f"attention width must be a positive multiple of heads; "
                             f"got width={width}, heads={heads}")
        self.width = width
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def qkv(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        n, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def project_out(self, out: Tensor) -> Tensor:
        return self.out_proj(out)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, causal: bool = False):
        super().__init__()
        self.causal = causal
        self.attn = MultiheadSelfAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(width * 4, width)),
        ]))
        self.ln_2 = LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x), causal=self.causal)
        return x + self.mlp(self.ln_2(x))

    def forward_shared_prefix(self, prefix: Tensor, rest: Tensor,
                              group_size: int) -> Tuple[Tensor, Tensor]:
        """:meth:`forward` of causal rows split as in
        :meth:`SelfAttentionBase.forward_shared_prefix`."""
        a_prefix, a_rest = self.attn.forward_shared_prefix(self.ln_1(prefix), self.ln_1(rest),
                                                           group_size)
        prefix, rest = prefix + a_prefix, rest + a_rest
        return prefix + self.mlp(self.ln_2(prefix)), rest + self.mlp(self.ln_2(rest))

    def forward_at(self, prefix: Optional[Tensor], rest: Tensor, group_size: int,
                   idx: Tensor) -> Tensor:
        """This causal block's output [N, width] at position ``idx[r]`` of ``rest[r]`` only
        (see :meth:`SelfAttentionBase.forward_at`): the MLP runs on those positions alone."""
        attn = self.attn.forward_at(None if prefix is None else self.ln_1(prefix),
                                    self.ln_1(rest), group_size, idx)
        x = rest[torch.arange(rest.shape[0], device=rest.device), idx] + attn
        return x + self.mlp(self.ln_2(x))


def as_batched_tokens(tokens: Tensor, batch: int, width: int, what: str) -> Tensor:
    """Return prompt tokens ``[n, width]`` or ``[batch, n, width]`` as ``[batch, n, width]``."""
    if tokens.dim() == 2 and tokens.shape[1] == width:
        return tokens.unsqueeze(0).expand(batch, -1, -1)
    if tokens.dim() == 3 and tokens.shape[0] == batch and tokens.shape[2] == width:
        return tokens
    raise ValueError(f"{what} must have shape [n_ctx, {width}] or [{batch}, n_ctx, {width}]; "
                     f"got {list(tokens.shape)}")


def check_block_numbers(blocks: Sequence[int], layers: int) -> set:
    """Return ``set(blocks)``; raise ``ValueError`` unless each lies in ``1..layers``."""
    bad = [b for b in blocks if not isinstance(b, int) or not 1 <= b <= layers]
    if bad:
        raise ValueError(f"block numbers must be integers in 1..{layers} (1-based: i is the "
                         f"output of block i); got {list(blocks)}")
    return set(blocks)


def replace_tokens(x: Tensor, tokens: Tensor, start: int, what: str = "deep prompt") -> Tensor:
    """Return ``x`` with positions ``[start : start + n]`` replaced by ``tokens`` (n = its length).

    Tokens falling beyond the end of ``x`` are dropped (used after EOT truncation, where those
    positions cannot influence the kept ones).
    """
    tokens = as_batched_tokens(tokens, x.shape[0], x.shape[2], what).to(x.dtype)
    end = min(start + tokens.shape[1], x.shape[1])
    return torch.cat([x[:, :start], tokens[:, :end - start], x[:, end:]], dim=1)


class Transformer(nn.Module):
    """A stack of :class:`ResidualAttentionBlock` with optional deep prompts.

    Attributes ``width``, ``layers`` and ``heads`` describe the stack.
    """

    def __init__(self, width: int, layers: int, heads: int, causal: bool = False):
        super().__init__()
        self.width = width
        self.layers = layers
        self.heads = heads
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, causal) for _ in range(layers)])

    def forward(self, x: Tensor, deep_prompts: Optional[Sequence[Tensor]] = None,
                prompt_start: int = 1) -> Tensor:
        """Run the blocks on ``x`` [N, L, width].

        Entry k of ``deep_prompts`` replaces positions ``[prompt_start : prompt_start + n_ctx]``
        at the input of layer k+1 (layer 0 sees ``x`` as given); a ``None`` entry leaves that
        layer's input as the previous layer produced it (TCP inserts at one layer only). At most
        ``layers - 1`` entries.
        """
        return self.forward_collect(x, (), deep_prompts, prompt_start)[0]

    def forward_collect(self, x: Tensor, collect: Sequence[int],
                        deep_prompts: Optional[Sequence[Tensor]] = None,
                        prompt_start: int = 1) -> Tuple[Tensor, List[Tensor]]:
        """As :meth:`forward`, also returning the output of the blocks in ``collect``.

        ``collect`` holds 1-based block numbers (``i`` = the output of block ``i``, the raw
        residual stream before any final norm), in any order, repeats allowed; the list follows
        that order. Returns ``(final output, [outputs of the collected blocks])``.
        """
        deep = self._deep_prompt_list(deep_prompts)
        wanted = check_block_numbers(collect, self.layers)
        outputs = {}
        for i, block in enumerate(self.resblocks):
            if 0 < i <= len(deep) and deep[i - 1] is not None:
                x = replace_tokens(x, deep[i - 1], prompt_start, f"deep_prompts[{i - 1}]")
            x = block(x)
            if i + 1 in wanted:
                outputs[i + 1] = x
        return x, [outputs[k] for k in collect]

    def can_share_prefix(self) -> bool:
        """Whether :meth:`forward_at` (with or without a shared prefix) computes exactly what
        :meth:`forward` does: causal blocks of this module's kinds, and no active dropout (a
        shared position would get one dropout mask for its whole group instead of one per row,
        and a row computed at one position draws other masks than a whole row), and no forward
        or backward hooks on the blocks (they run whole, so hooks see every block's whole input
        and output)."""
        return (all(type(b) is ResidualAttentionBlock and b.causal
                    and isinstance(b.attn, SelfAttentionBase) for b in self.resblocks)
                and not any(isinstance(m, nn.Dropout) and m.p > 0 and m.training
                            for m in self.modules())
                and not _has_module_hooks(self.resblocks))

    def forward_at(self, x: Tensor, idx: Tensor, shared: int = 0, group_size: int = 1,
                   deep_prompts: Optional[Sequence[Tensor]] = None,
                   prompt_start: int = 1) -> Tensor:
        """``forward(x, deep_prompts, prompt_start)[rows, idx]`` [N, width] for causal rows: the
        output of the last block at position ``idx[r]`` of each row r.

        The first ``shared`` positions (0: none) must be equal within each group of
        ``group_size`` (M) consecutive rows; they are computed once per group, and the other
        positions attend to them (``ResidualAttentionBlock.forward_shared_prefix``). Deep
        prompts must then be [n_ctx, width] and lie within the shared positions, and every
        ``idx[r]`` at or past them. The last block attends from ``idx`` only and runs its MLP
        there alone (CLIP reads the text feature at EOT only). Exact under the causal mask.
        """
        deep = self._deep_prompt_list(deep_prompts)
        if not self.resblocks[0].causal:
            raise ValueError("computing selected positions or a shared prefix needs causal "
                             "attention (a text transformer)")
        if shared and any(p is not None and (p.dim() != 2 or prompt_start + p.shape[0] > shared)
                          for p in deep):
            raise ValueError(f"deep prompts must be [n_ctx, width] within the {shared} shared "
                             f"positions (from {prompt_start})")
        n, length, width = x.shape
        prefix = x.view(n // group_size, group_size, length, width)[:, 0, :shared] if shared else None
        rest = x[:, shared:]

        def enter(i: int, prefix: Optional[Tensor], rest: Tensor):
            """Insert the deep prompt entering block ``i`` (into the shared positions if any)."""
            if 0 < i <= len(deep) and deep[i - 1] is not None:
                name = f"deep_prompts[{i - 1}]"
                if shared:
                    return replace_tokens(prefix, deep[i - 1], prompt_start, name), rest
                return prefix, replace_tokens(rest, deep[i - 1], prompt_start, name)
            return prefix, rest

        *blocks, last = self.resblocks
        for i, block in enumerate(blocks):
            prefix, rest = enter(i, prefix, rest)
            if shared:
                prefix, rest = block.forward_shared_prefix(prefix, rest, group_size)
            else:
                rest = block(rest)
        prefix, rest = enter(len(blocks), prefix, rest)
        return last.forward_at(prefix, rest, group_size, idx - shared)

    def _deep_prompt_list(self, deep_prompts: Optional[Sequence[Tensor]]) -> List[Tensor]:
        """``deep_prompts`` as a list; at most ``layers - 1`` entries (entry k enters layer k+1)."""
        deep = [] if deep_prompts is None else list(deep_prompts)
        if len(deep) > self.layers - 1:
            raise ValueError(f"at most {self.layers - 1} deep prompts fit a {self.layers}-layer "
                             f"transformer (entry k enters layer k+1); got {len(deep)}")
        return deep

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation of the text transformer (std scaled by width and depth)."""
        proj_std = (self.width ** -0.5) * ((2 * self.layers) ** -0.5)
        attn_std = self.width ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


def use_exact_gelu(module: nn.Module) -> None:
    """Give every :class:`ResidualAttentionBlock` under ``module`` the exact ``nn.GELU``
    (open_clip's default activation) in place of OpenAI's QuickGELU."""
    for block in module.modules():
        if isinstance(block, ResidualAttentionBlock):
            block.mlp.gelu = nn.GELU()
