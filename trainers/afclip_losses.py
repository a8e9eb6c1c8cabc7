"""AF-CLIP's training losses (upstream ``main.py``): focal on probabilities, L1, patch alignment.

``loss = focal(image_score, y) + lambda1 * (focal(map, M) + L1(map, M)) + lambda2 * L_pal``
where ``M`` is the ground-truth mask resized bilinearly to the patch grid and binarised at 0.5.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dassl_lite.engine.anomaly_core import focal_loss

__all__ = ["afclip_loss", "focal_loss", "grid_masks", "patch_alignment_loss"]


def grid_masks(masks: Tensor, side: int) -> Tensor:
    """[B, H, W] or [B, 1, H, W] masks in [0, 1] -> [B, side, side] in {0, 1}: bilinear resize,
    then > 0.5 is anomalous (upstream leaves a value of exactly 0.5 at 0.5; here it is 0)."""
    if masks.dim() == 3:
        masks = masks[:, None]
    resized = F.interpolate(masks.float(), size=(side, side), mode="bilinear")
    return (resized[:, 0] > 0.5).float()


def patch_alignment_loss(tokens: Sequence[Tensor], grid: Tensor) -> Tensor:
    """L_pal: mean over maps of ``max(0, mean cos(normal, abnormal) - mean cos(same state))``.

    ``tokens``: projected maps [B, 1 + L, D] (CLS first, ignored); ``grid``: [B, L] or
    [B, G, G] binary patch labels. Pairs are taken within each image (ordered pairs, the
    diagonal counts as a same-state pair), pooled over the batch, as upstream does.
    Explicit rule: when no image of the batch holds both a normal and an anomalous patch there is
    no cross pair and the term is exactly 0 (upstream returns 0 for "no normal patch" and gets
    a NaN, silently turned into 0, for "no anomalous patch").

    Computed in closed form: for unit vectors, the sum of cosines over pairs (i in A, j in N) is
    ``<sum_A x, sum_N x>``, so no [B, L, L] similarity matrix is built.
    """
    labels = grid.reshape(grid.shape[0], -1).float()
    n_abn = labels.sum(dim=1)
    n_nor = labels.shape[1] - n_abn
    cross_count = 2 * (n_abn * n_nor).sum()
    if cross_count == 0:
        return labels.new_zeros(())
    same_count = (n_abn ** 2 + n_nor ** 2).sum()
    total = labels.new_zeros(())
    for t in tokens:
        x = F.normalize(t[:, 1:].float(), dim=-1)
        s_abn = torch.einsum("bl,bld->bd", labels, x)
        s_nor = x.sum(dim=1) - s_abn
        cross = 2 * (s_abn * s_nor).sum() / cross_count
        same = ((s_abn ** 2).sum() + (s_nor ** 2).sum()) / same_count
        total = total + torch.clamp(cross - same, min=0)
    return total / len(tokens)


def afclip_loss(out: Dict[str, object], labels: Tensor, masks: Tensor, gamma: float,
                lambda1: float, lambda2: float) -> Dict[str, Tensor]:
    """The three terms and their weighted sum (key ``loss``) for one batch."""
    amap = out["anomaly_map"]
    grid = grid_masks(masks, amap.shape[-1])
    l_cls = focal_loss(out["image_score"], labels.float(), gamma)
    l_seg = focal_loss(amap, grid, gamma) + F.l1_loss(amap.float(), grid)
    l_pal = patch_alignment_loss(out["tokens"], grid)
    return {"loss": l_cls + lambda1 * l_seg + lambda2 * l_pal, "l_cls": l_cls, "l_seg": l_seg,
            "l_pal": l_pal}
