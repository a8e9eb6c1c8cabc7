"""AF-CLIP's training losses (upstream ``main.py``): focal on probabilities, L1, patch alignment.

``loss = focal(image_score, y) + lambda1 * (focal(map, M) + L1(map, M)) + lambda2 * L_pal``
where ``M`` is the ground-truth mask resized bilinearly to the patch grid, 0 below 0.5 and 1
above (a cell at exactly 0.5 stays 0.5, as upstream).

The map's gradient (``SEG_GRADIENTS``, ``TRAINER.AFCLIP.SEG_GRADIENT``):

- ``"upstream"``: as published. Upstream's ``patch_alignment_loss`` builds its labels with
  ``new_gts = copy.copy(gts)``, which shares storage with ``gts``, and then writes
  ``new_gts[new_gts == 0] = -1`` after focal and L1 on the map saved ``gts`` for backward (a
  copy has its own version counter, so autograd does not notice). The loss VALUE is right,
  but the backward of the map's focal term uses target -1 at every normal patch. Reproduced
  here the same way: after the map's terms, the grid's storage is overwritten with -1 at its
  0 cells, behind autograd's back (``Tensor.data``), when the batch has a normal patch.
- ``"corrected"``: the gradient of the loss as written (targets 0 at normal patches).
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dassl_lite.engine.anomaly_core import focal_loss

__all__ = ["afclip_loss", "focal_loss", "grid_masks", "patch_alignment_loss"]


SEG_GRADIENTS = ("upstream", "corrected")  # TRAINER.AFCLIP.SEG_GRADIENT


def grid_masks(masks: Tensor, side: int) -> Tensor:
    """[B, H, W] or [B, 1, H, W] masks in [0, 1] -> [B, side, side] in {0, 0.5, 1}, as upstream:
    bilinear resize (no antialiasing), then below 0.5 -> 0, above 0.5 -> 1, and a cell at
    exactly 0.5 stays 0.5 (it counts in focal and L1 with target 0.5 and in no pair of L_pal)."""
    if masks.dim() == 3:
        masks = masks[:, None]
    g = F.interpolate(masks.float(), size=(side, side), mode="bilinear")[:, 0]
    return torch.where(g < 0.5, torch.zeros_like(g), torch.where(g > 0.5, torch.ones_like(g), g))


def patch_alignment_loss(tokens: Sequence[Tensor], grid: Tensor) -> Tensor:
    """L_pal: mean over maps of ``max(0, mean cos(normal, abnormal) - mean cos(same state))``.

    ``tokens``: projected maps [B, 1 + L, D] (CLS first, ignored); ``grid``: [B, L] or
    [B, G, G] patch labels: 1 anomalous, 0 normal; any other value (upstream's 0.5 cells) is
    in no pair. Pairs are taken within each image (ordered pairs, the
    diagonal counts as a same-state pair), pooled over the batch, as upstream does.
    Explicit rule: when no image of the batch holds both a normal and an anomalous patch there is
    no cross pair and the term is exactly 0 (upstream returns 0 for "no normal patch" and gets
    a NaN, silently turned into 0, for "no anomalous patch").

    Computed in closed form: for unit vectors, the sum of cosines over pairs (i in A, j in N) is
    ``<sum_A x, sum_N x>``, so no [B, L, L] similarity matrix is built.
    """
    flat = grid.reshape(grid.shape[0], -1)
    labels, normal = (flat == 1).float(), (flat == 0).float()
    n_abn, n_nor = labels.sum(dim=1), normal.sum(dim=1)
    cross_count = 2 * (n_abn * n_nor).sum()
    if cross_count == 0:
        return labels.new_zeros(())
    same_count = (n_abn ** 2 + n_nor ** 2).sum()
    total = labels.new_zeros(())
    for t in tokens:
        x = F.normalize(t[:, 1:].float(), dim=-1)
        s_abn = torch.einsum("bl,bld->bd", labels, x)
        s_nor = torch.einsum("bl,bld->bd", normal, x)
        cross = 2 * (s_abn * s_nor).sum() / cross_count
        same = ((s_abn ** 2).sum() + (s_nor ** 2).sum()) / same_count
        total = total + torch.clamp(cross - same, min=0)
    return total / len(tokens)


def afclip_loss(out: Dict[str, object], labels: Tensor, masks: Tensor, gamma: float,
                lambda1: float, lambda2: float,
                seg_gradient: str = "upstream") -> Dict[str, Tensor]:
    """The three terms and their weighted sum (key ``loss``) for one batch; ``seg_gradient``
    one of ``SEG_GRADIENTS`` (module docstring)."""
    if seg_gradient not in SEG_GRADIENTS:
        raise ValueError(f"seg_gradient must be one of {', '.join(SEG_GRADIENTS)}; "
                         f"got {seg_gradient!r}")
    amap = out["anomaly_map"]
    grid = grid_masks(masks, amap.shape[-1])
    l_cls = focal_loss(out["image_score"], labels.float(), gamma)
    l_seg = focal_loss(amap, grid, gamma) + F.l1_loss(amap.float(), grid)
    l_pal = patch_alignment_loss(out["tokens"], grid)
    if seg_gradient == "upstream":
        # upstream's copy.copy(gts) aliasing: the targets saved for backward become -1 at the
        # normal cells; .data writes the same storage without bumping the version counter
        grid.data.masked_fill_(grid.data == 0, -1.0)
    return {"loss": l_cls + lambda1 * l_seg + lambda2 * l_pal, "l_cls": l_cls, "l_seg": l_seg,
            "l_pal": l_pal}
