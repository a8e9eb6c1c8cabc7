"""AnomalyCLIP's pieces as plain modules and functions (no trainer, no config); the maths is in
:mod:`trainers.anomaly.anomalyclip`.

- :class:`AnomalyCLIPPromptLearner`: the object-agnostic prompts ``[V1..V_n] object.`` and
  ``[W1..W_n] damaged object.`` (``ctx_pos`` / ``ctx_neg`` [1, 1, N_CTX, width], N(0, 0.02),
  placed after SOT) and the deep text prompts ``compound_prompts_text`` (DEPTH - 1 tensors
  [T_N_CTX, width], N(0, 0.02)); entry k overwrites positions 1..T_N_CTX at the input of text
  layer k + 1. Parameter names are upstream's ``AnomalyCLIP_PromptLearner`` state-dict names.
- :class:`AnomalyCLIPModel`: the two state features, DPAM image tokens
  (:func:`dassl_lite.engine.anomaly_core.dpam_forward_features`), per-layer maps
  (:func:`~dassl_lite.engine.anomaly_core.patch_state_maps`), image score and anomaly map.
- :func:`anomalyclip_loss`: image cross-entropy + LAM * per map (focal + Dice(abnormal, M) +
  Dice(normal, 1 - M)).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dassl_lite.clip import CLIP, tokenize
from dassl_lite.engine.anomaly_core import (binary_dice_loss, dpam_forward_features,
                                            focal_loss_softmax, patch_state_maps)

# upstream's state_normal_list / state_anomaly_list with its single class name "object"
STATE_TEMPLATES = ("{}", "damaged {}")
OBJECT = "object"


def state_prompt_texts(n_ctx: int) -> List[str]:
    """The two tokenised texts, ``n_ctx`` placeholder words before the state phrase (upstream's
    ``"X X ... X object."`` and ``"X X ... X damaged object."``)."""
    prefix = " ".join(["X"] * n_ctx)
    return [f"{prefix} {t.format(OBJECT)}." for t in STATE_TEMPLATES]


class AnomalyCLIPPromptLearner(nn.Module):
    """Learned normal / abnormal contexts and deep text prompts (the only trained weights)."""

    def __init__(self, clip_model: CLIP, n_ctx: int, depth: int, t_n_ctx: int):
        super().__init__()
        width = clip_model.ln_final.weight.shape[0]
        self.n_ctx, self.t_n_ctx = n_ctx, t_n_ctx
        self.ctx_pos = nn.Parameter(torch.empty(1, 1, n_ctx, width).normal_(std=0.02))
        self.ctx_neg = nn.Parameter(torch.empty(1, 1, n_ctx, width).normal_(std=0.02))
        self.compound_prompts_text = nn.ParameterList(
            [nn.Parameter(torch.empty(t_n_ctx, width).normal_(std=0.02))
             for _ in range(depth - 1)])
        device = clip_model.token_embedding.weight.device
        tokens = tokenize(state_prompt_texts(n_ctx)).to(device)
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokens).float()
        self.register_buffer("embedding", embedding, persistent=False)
        self.register_buffer("eot_idx", tokens.argmax(dim=-1), persistent=False)

    def forward(self, fp16_deep_prompts: bool = True):
        """(token embeddings [2, 77, width] with the contexts after SOT, EOT positions [2], deep
        prompts). ``fp16_deep_prompts``: round the deep prompts to fp16 as upstream's
        ``.half()`` does (also in fp32 models)."""
        ctx = torch.cat([self.ctx_pos.reshape(1, self.n_ctx, -1),
                         self.ctx_neg.reshape(1, self.n_ctx, -1)])
        x = torch.cat([self.embedding[:, :1], ctx.to(self.embedding.dtype),
                       self.embedding[:, 1 + self.n_ctx:]], dim=1)
        deep = [p.half() if fp16_deep_prompts else p for p in self.compound_prompts_text]
        return x, self.eot_idx, deep


class AnomalyCLIPModel(nn.Module):
    """Frozen CLIP + :class:`AnomalyCLIPPromptLearner`.

    ``forward(images)`` returns ``maps`` (per layer map [B, 2, H, W], states normal/abnormal),
    ``image_logits`` [B, 2] (``cos / T`` of the CLS feature), ``image_score`` [B] (their softmax,
    abnormal) and ``anomaly_map`` [B, H, W] (sum over the maps of ``(p_ab + 1 - p_n) / 2``).
    """

    def __init__(self, clip_model: CLIP, learner: AnomalyCLIPPromptLearner,
                 features_list: Sequence[int], feature_map_layer: int, dpam_layer: int,
                 temperature: float, identical_layer_maps: bool, fp16_deep_prompts: bool):
        super().__init__()
        self.clip, self.learner = clip_model, learner
        self.features_list = list(features_list)
        self.feature_map_layer = feature_map_layer
        self.dpam_layer = dpam_layer
        self.temperature = temperature
        self.identical_layer_maps = identical_layer_maps
        self.fp16_deep_prompts = fp16_deep_prompts
        self._text_cache = None

    def text_features(self) -> Tensor:
        """[2, E] normalised features of the normal and abnormal prompts (cached at test)."""
        if self._text_cache is not None:
            return self._text_cache
        x, eot, deep = self.learner(self.fp16_deep_prompts)
        feats = self.clip.encode_text_embeddings(x, eot, deep).float()
        return feats / feats.norm(dim=-1, keepdim=True)

    def cache_text(self) -> None:
        with torch.no_grad():
            self._text_cache = None
            self._text_cache = self.text_features()

    def clear_text_cache(self) -> None:
        self._text_cache = None

    @torch.no_grad()
    def encode_image(self, images: Tensor):
        """(normalised image feature [B, E]: the plain path's CLS @ proj, without ``ln_post`` as
        upstream; normalised projected tokens of each FEATURES_LIST block [B, 1 + N, E])."""
        visual = self.clip.visual
        feats = dpam_forward_features(visual, images, self.features_list, self.dpam_layer,
                                      self.identical_layer_maps)
        image = (feats.final[:, 0] @ visual.proj).float()
        projected = {id(t): visual.project_tokens(t).float() for t in feats.tokens}
        projected = {k: t / t.norm(dim=-1, keepdim=True) for k, t in projected.items()}
        # the same object for identical layers, so that maps and loss terms are computed once
        return F.normalize(image, dim=-1), [projected[id(t)] for t in feats.tokens]

    def forward(self, images: Tensor) -> Dict[str, Any]:
        text = self.text_features()
        image, tokens = self.encode_image(images)
        logits = image @ text.t() / self.temperature
        maps = patch_state_maps(tokens[self.feature_map_layer:], text, images.shape[-2:],
                                self.temperature)
        anomaly_map = sum(count * ((m[:, 1] + 1 - m[:, 0]) / 2.0)
                          for m, count in distinct_counts(maps))
        return {"maps": maps, "image_logits": logits,
                "image_score": torch.softmax(logits, dim=-1)[:, 1], "anomaly_map": anomaly_map}


def distinct_counts(maps: Sequence[Tensor]) -> List[Tuple[Tensor, int]]:
    """(map, how many entries of ``maps`` are that very tensor object), first appearance first."""
    out: List[Tuple[Tensor, int]] = []
    for m in maps:
        for i, (seen, count) in enumerate(out):
            if seen is m:
                out[i] = (seen, count + 1)
                break
        else:
            out.append((m, 1))
    return out


def anomalyclip_loss(out: Dict[str, Any], labels: Tensor, masks: Tensor,
                     lam: float) -> Dict[str, Tensor]:
    """``image_loss + LAM * sum over maps (focal(P, M) + Dice(P_ab, M) + Dice(P_n, 1 - M))``,
    M = mask > 0.5 ([B, H, W]); image_loss = cross-entropy of the image logits."""
    gt = (masks.reshape(masks.shape[0], *masks.shape[-2:]) > 0.5).float()
    focal = dice = 0
    for m, count in distinct_counts(out["maps"]):  # identical layer maps: each term once, x count
        m = m.float()
        focal = focal + count * focal_loss_softmax(m, gt)
        dice = dice + count * (binary_dice_loss(m[:, 1], gt) + binary_dice_loss(m[:, 0], 1 - gt))
    image_loss = F.cross_entropy(out["image_logits"].float(), labels.long())
    local = lam * (focal + dice)
    return {"loss": local + image_loss, "image_loss": image_loss, "local": local,
            "focal": focal, "dice": dice}
