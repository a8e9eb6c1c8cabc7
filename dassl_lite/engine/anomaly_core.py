"""Pieces shared by the CLIP anomaly-detection methods (AF-CLIP, ZeroshotAD, APRIL-GAN, ...).

- :func:`focal_loss`: binary focal loss on probabilities (AF-CLIP, gamma 4, no alpha).
- :func:`focal_loss_softmax`: the multi-class focal loss on a softmax map that APRIL-GAN and
  AnomalyCLIP copy from Hsuxu/Loss_ToolBox (``FocalLoss()``: gamma 2, alpha 1, label smoothing
  1e-5 added to ``p_t``).
- :func:`binary_dice_loss`: ``1 - mean_b (2 |p t| + 1) / (|p| + |t| + 1)`` (APRIL-GAN,
  AnomalyCLIP ``BinaryDiceLoss``).
- ``NORMAL_STATES`` / ``ABNORMAL_STATES`` and :func:`state_sentences`: the 7 normal and 5
  abnormal state words of WinCLIP's compositional ensemble (APRIL-GAN, AdaCLIP), formatted into
  a method's templates.
- :func:`encode_prompt_ensemble`: per state, the normalised mean of the normalised text features
  of its prompts (WinCLIP / APRIL-GAN / ZeroshotAD prompt ensembles).
- :func:`min_cosine_distance`: ``1 - max cos`` of each query against a memory bank (few-shot).
- :func:`load_released_weights`: ``torch.load(weights_only=True)`` of a method's released file
  with an optional allow-list of inert stand-in classes; every failure names the file.
- :func:`dpam_forward_features`: intermediate ViT tokens with DPAM, the value-value attention
  path of the later blocks (AnomalyCLIP; CLIP Surgery's v-v attention), optionally with
  AnomalyCLIP's 2024 aliasing that made every later layer's tokens equal the last block's.
- :func:`patch_state_maps`: per layer, the softmax over states of ``cos(patch, text) / T`` at
  each patch, resized bilinearly to the image (AnomalyCLIP's per-layer maps).
"""
from __future__ import annotations

import os
import pickle
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from torch import Tensor

from ..clip import CLIP, VisionTransformer, tokenize
from ..clip.transformer import SelfAttentionBase, check_block_numbers
from ..errors import DasslLiteError, load_error_reason
from .checkpoint import save_checkpoint

__all__ = ["ABNORMAL_STATES", "DualPathFeatures", "NORMAL_STATES", "ReleasedWeightsError",
           "binary_dice_loss", "dpam_attention", "dpam_forward_features", "encode_prompt_ensemble",
           "focal_loss", "focal_loss_softmax", "load_released_weights", "min_cosine_distance",
           "patch_state_maps", "state_sentences", "write_converted_checkpoint"]

NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw",
                 "{} without defect", "{} without damage")
ABNORMAL_STATES = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")


def state_sentences(category: str, templates: Sequence[str]) -> List[List[str]]:
    """[[normal sentences], [abnormal sentences]]: ``template.format(state.format(category))``
    for each state word (outer loop) and template (inner loop), as APRIL-GAN's
    ``prompt_ensemble.py`` and AdaCLIP's ``TextEmbebddingLayer`` order them."""
    return [[t.format(s.format(category)) for s in states for t in templates]
            for states in (NORMAL_STATES, ABNORMAL_STATES)]


class ReleasedWeightsError(DasslLiteError):
    """A released upstream weight file that is missing or not in the expected format."""


def focal_loss(prob: Tensor, target: Tensor, gamma: float = 4.0) -> Tensor:
    """Binary focal loss on probabilities: ``mean(BCE(p, t) * (1 - p_t) ** gamma)``, no alpha."""
    prob, target = prob.float(), target.float()
    bce = F.binary_cross_entropy(prob, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    return (bce * (1 - p_t) ** gamma).mean()


def focal_loss_softmax(probs: Tensor, target: Tensor, gamma: float = 2.0,
                       smooth: float = 1e-5) -> Tensor:
    """Focal loss of class probabilities ``probs`` [B, C, ...] (already softmaxed) against
    integer labels ``target`` [B, ...] (or [B, 1, ...]), as Loss_ToolBox's ``FocalLoss()``:
    the one-hot target is clamped to ``[smooth / (C - 1), 1 - smooth]``,
    ``p_t = <one_hot, p> + smooth`` and the loss is ``mean(-(1 - p_t) ** gamma * log p_t)``."""
    num_class = probs.shape[1]
    flat = probs.reshape(probs.shape[0], num_class, -1).transpose(1, 2).reshape(-1, num_class)
    labels = target.reshape(-1).long()
    if labels.numel() != flat.shape[0]:
        raise ValueError(f"focal_loss_softmax: {flat.shape[0]} predictions but "
                         f"{labels.numel()} target values")
    one_hot = F.one_hot(labels, num_class).to(flat.dtype)
    one_hot = torch.clamp(one_hot, smooth / (num_class - 1), 1.0 - smooth)
    p_t = (one_hot * flat).sum(1) + smooth
    return (-torch.pow(1 - p_t, gamma) * p_t.log()).mean()


def binary_dice_loss(prob: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """``1 - mean over the batch of (2 sum(p t) + smooth) / (sum p + sum t + smooth)``."""
    n = target.shape[0]
    p, t = prob.reshape(n, -1), target.reshape(n, -1)
    dice = (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return 1 - dice.sum() / n


@torch.no_grad()
def encode_prompt_ensemble(clip_model: CLIP, prompt_sets: Sequence[Sequence[str]],
                           normalize_members: bool = True) -> Tensor:
    """[S, E]: for each of the S prompt lists, the mean of its normalised text features,
    re-normalised (fp32). ``normalize_members=False`` averages the raw features instead
    (Accurate-WinCLIP's ``prepare_text_future``)."""
    out = []
    for prompts in prompt_sets:
        tokens = tokenize(list(prompts)).to(clip_model.token_embedding.weight.device)
        feats = clip_model.encode_text(tokens).float()
        mean = (F.normalize(feats, dim=-1) if normalize_members else feats).mean(dim=0)
        out.append(mean / mean.norm())
    return torch.stack(out)


def min_cosine_distance(queries: Tensor, bank: Tensor) -> Tensor:
    """[N]: ``1 - max_j cos(q_i, bank_j)`` for queries [N, D]; ``bank`` [M, D] is L2-normalised."""
    cos = F.normalize(queries, dim=-1) @ bank.T
    return 1 - cos.max(dim=1).values


def load_released_weights(path: str, what: str, method: str, allowed: Sequence[str] = (),
                          stand_in: Optional[type] = None,
                          error: Type[DasslLiteError] = ReleasedWeightsError) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; the class paths in ``allowed`` are
    unpickled as the inert ``stand_in`` class (no pickled code runs, any other global is refused).
    ``what`` / ``method`` name the file in messages ("No released AF-CLIP adaptor at ...")."""
    if not os.path.isfile(path):
        raise error(f"No released {method} {what} at {path!r}")
    allow: Sequence[Tuple[type, str]] = [(stand_in, name) for name in allowed]
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # a refused global (or content torch cannot read)
        lines = [line for line in str(e).splitlines() if "GLOBAL" in line] or [str(e)]
        listed = f" and the {method} allow-list ({', '.join(allowed)})" if allowed else ""
        raise error(f"Refusing to read {what} {path!r}: it is not loadable with "
                    f"weights_only=True{listed}: {type(e).__name__}: {lines[0].strip()}") from e
    except Exception as e:  # a truncated or damaged file, not a torch file
        raise error(f"Cannot read {what} {path!r}: {load_error_reason(e)}; expected "
                    f"{method}'s released {what} file") from None


def write_converted_checkpoint(output_dir: str, model_name: str, state: Any, epoch: int,
                               source: str, force: bool = False) -> str:
    """Write a converted upstream ``state`` as ``<output_dir>/<model_name>/model.pth.tar-<epoch>``
    (a trainable-only checkpoint); refused (:class:`ReleasedWeightsError`) when that folder holds
    files already, unless ``force``."""
    target = os.path.join(output_dir, model_name)
    if os.path.isdir(target) and os.listdir(target) and not force:
        raise ReleasedWeightsError(
            f"error: {target} holds files already (a run or an earlier conversion) that writing "
            f"here would replace; choose a new --output-dir or pass --force")
    meta = {"state_dict": state, "epoch": epoch, "optimizer": None, "scheduler": None,
            "val_result": None, "source": source}
    return save_checkpoint(meta, target)


def convert_and_write(convert: Callable[[], Dict[str, Tensor]], output_dir: str,
                      model_name: str, epoch: int, source: str, force: bool,
                      describe: Callable[[Dict[str, Tensor]], str],
                      log: logging.Logger) -> int:
    """A converter tool's body: ``convert()`` the released file, write it with
    :func:`write_converted_checkpoint` and log ``Wrote <path>: <describe(state)>``; returns the
    exit code (2, with the error logged, when either step raises :class:`DasslLiteError`)."""
    try:
        state = convert()
        path = write_converted_checkpoint(output_dir, model_name, state, epoch, source, force)
    except DasslLiteError as e:
        log.error(str(e))
        return 2
    log.info(f"Wrote {path}: {describe(state)}")
    return 0


# --------------------------------------------------------------------------- DPAM, layer maps
@dataclass
class DualPathFeatures:
    """What :func:`dpam_forward_features` returns.

    ``tokens``: per requested block, [B, 1 + h*w, width] (CLS first), the DPAM path's stream from
    the first DPAM block on, the plain residual stream before it; ``final``: the plain (original)
    path after the last block, [B, 1 + h*w, width]; ``grid``: the patch grid ``(h, w)``.
    """

    tokens: List[Tensor]
    final: Tensor
    grid: Tuple[int, int]


def dpam_attention(attn: SelfAttentionBase, x: Tensor) -> Tuple[Tensor, Tensor]:
    """(original, value-value) outputs of one block's attention on ``x`` [B, L, width], both
    through its output projection: ``softmax(q k^T / sqrt(d)) v`` and ``softmax(v v^T /
    sqrt(d)) v`` from the same q/k/v projection (AnomalyCLIP's ``Attention``, which replaces q
    and k by v); one SDPA call over both."""
    n, length, width = x.shape
    q, k, v = attn.qkv(x)
    out = F.scaled_dot_product_attention(torch.cat([q, v]), torch.cat([k, v]), torch.cat([v, v]))
    out = attn.project_out(out.transpose(1, 2).reshape(2 * n, length, width))
    return out[:n], out[n:]


def dpam_forward_features(visual: VisionTransformer, images: Tensor, layers: Sequence[int],
                          dpam_layer: int, identical_layers: bool = False) -> DualPathFeatures:
    """ViT tokens after the 1-based blocks ``layers``, with DPAM in the last ``dpam_layer - 1``
    blocks (AnomalyCLIP's ``DPAM_layer``: 20 of ViT-L/14's 24 blocks gives blocks 6..24; 1
    gives none, the plain encoder).

    A DPAM block keeps two streams, as upstream's ``ResidualAttentionBlock`` with
    ``ffn=False``: the original ``x <- x + attn(ln_1(x)); x <- x + mlp(ln_2(x))``, and the DPAM
    stream ``z <- z + vv(ln_1(x))`` (no MLP), where ``vv`` is the value-value attention of the
    ORIGINAL stream's normalised tokens and ``z`` starts as the input of the first DPAM block.
    A requested block at or past the first DPAM block returns ``z``.

    ``identical_layers``: upstream's code before 2025-04-13 (which trained the released
    weights; its issues #18, #64) appended ``z`` without a copy and then added to it in place,
    so every requested block from the one before the first DPAM block on returned the LAST
    block's ``z``; True reproduces that.
    """
    n = visual.layers
    if not 1 <= dpam_layer <= n + 1:
        raise ValueError(f"DPAM_LAYER must lie in 1..{n + 1} for a {n}-block ViT (DPAM in the "
                         f"last DPAM_LAYER - 1 blocks; 1 = none); got {dpam_layer}")
    wanted = check_block_numbers(layers, n)
    start = n - (dpam_layer - 1)  # 0-based index of the first DPAM block (n: none)
    x = visual.ln_pre(visual.embed(images))
    z: Optional[Tensor] = None
    out: Dict[int, Tensor] = {}
    for i, block in enumerate(visual.transformer.resblocks):
        if i < start:
            x = block(x)
        else:
            ori, vv = dpam_attention(block.attn, block.ln_1(x))
            z = (x if z is None else z) + vv
            x = x + ori
            x = x + block.mlp(block.ln_2(x))
        if i + 1 in wanted:
            out[i + 1] = x if z is None else z
    if identical_layers and z is not None:
        out = {b: (z if b >= start else t) for b, t in out.items()}
    return DualPathFeatures([out[b] for b in layers], x, visual.input_grid(images))


def patch_state_maps(features: Sequence[Tensor], text: Tensor, size: Sequence[int],
                     temperature: float) -> List[Tensor]:
    """Per entry of ``features`` ([B, 1 + h*w, E], CLS first, L2-normalised): [B, S, H, W], the
    softmax over the S states of ``features @ text.T / temperature`` at each patch (``text``
    [S, E], normalised), reshaped to the square grid and resized bilinearly
    (``align_corners=False``) to ``size`` (AnomalyCLIP's ``compute_similarity`` +
    ``get_similarity_map``: softmax first, then resizing). An entry that is the same tensor
    object as an earlier one (:func:`dpam_forward_features` with ``identical_layers``) gets that
    entry's map object again, computed once."""
    maps: List[Tensor] = []
    for i, f in enumerate(features):
        same = [j for j in range(i) if features[j] is f]
        if same:
            maps.append(maps[same[0]])
            continue
        b, n = f.shape[0], f.shape[1] - 1
        side = int(round(n ** 0.5))
        if side * side != n:
            raise ValueError(f"expected a square patch grid; got {n} patch tokens")
        probs = torch.softmax(f[:, 1:] @ text.t() / temperature, dim=-1)
        probs = probs.transpose(1, 2).reshape(b, text.shape[0], side, side)
        maps.append(F.interpolate(probs, size=tuple(size), mode="bilinear", align_corners=False))
    return maps
