"""AdaCLIP's model (Cao et al., ECCV 2024; reference code caoyunkang/AdaCLIP ``method/adaclip.py``).

Trainable pieces (:class:`AdaCLIPLearner`; state-dict names as upstream's, minus its
``clip_model.`` prefix, so released files map one to one):

- ``visual_prompter.static_prompts.<k>`` [length, vision width] and
  ``text_prompter.static_prompts.<k>`` [length, text width], k < PROMPTING_DEPTH (normal init,
  std 0.02): the static prompts of layer k;
- ``dynamic_visual_prompt_generator.head.<j>`` / ``dynamic_text_prompt_generator.head.<j>``,
  j < PROMPTING_LENGTH: ``Linear(embed_dim, width)`` per prompt position, applied to the frozen
  CLIP's image feature (``ln_post(CLS) @ proj`` of the unprompted encoder, no gradient): the
  dynamic (image-conditioned) prompt [B, length, width], added to the static one of every layer;
- ``patch_token_layer.head.<i>``: ``Linear(vision width, embed_dim)`` per output layer (patch
  tokens, CLS dropped); ``cls_token_layer.head.0``: ``Linear(embed_dim, embed_dim)`` on the
  prompted encoder's image feature.

Vision encoder: after ``ln_pre`` the layer-0 prompts are appended after the patch tokens; at the
input of layers 1..depth-1 these last ``length`` tokens are replaced by that layer's prompts
(no positional embedding, no ``ln_pre``); deeper layers keep them. Output tokens drop them.
Text encoder: layer 0 sees the sentence unchanged; at the input of layers 1..depth-1 positions
``1 .. length`` (after SOT) are replaced by that layer's prompts. So the layer-0 static text
prompt exists but is never used (as upstream); it is frozen here.

Text: per image and state, the prompt ensemble of its category (7 normal / 5 abnormal state
words x 4 templates) through the prompted text encoder: mean of the normalised features,
normalised, ``T`` [B, E, 2]. Maps: ``100 * normalize(patch_token_layer(t)) @ T`` per layer,
bilinear (align_corners) to the input size. Training: per-layer softmax maps. Evaluation: the
layer mean of the logits, softmaxed; map ``(p_abn + 1 - p_norm) / 2``. Image score:
``softmax(100 * f @ T)``, ``f`` the projected CLS or, with HSF,
``normalize(0.2 * HSF + 0.8 * f)``.

HSF (hybrid semantic fusion, the "upgraded" released version): the ``5 K`` patches with the
highest abnormal probability of the layer-mean map; K-means (scikit-learn ``KMeans(K,
n_init="auto")``, numpy's global RNG as upstream) on their layer-concatenated projected tokens;
each cluster's centre is the mean of its members' tokens over all layers; HSF = normalised mean of
the K centres (gradients flow through the means, not the clustering).

Deliberate differences: prompts are cast to the model's dtype (upstream ``.half()`` even in fp32),
and the text encoder takes each image's own dynamic prompts (upstream broadcasts the batch's
prompts against the sentences, which works for batch size 1 only, the size it enforces).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dassl_lite.clip import CLIP, tokenize
from dassl_lite.engine.anomaly_core import (binary_dice_loss, encode_prompt_ensemble,
                                            focal_loss_softmax, state_sentences)

TEMPLATES = ("a bad photo of a {}.", "a low resolution photo of the {}.", "a bad photo of the {}.",
             "a cropped photo of the {}.")
HSF_ALPHA = 0.2  # weight of the clustered feature in the HSF image feature


def adaclip_sentences(category: str) -> List[List[str]]:
    """[[28 normal], [20 abnormal]] sentences; '-' in the name becomes a space (upstream)."""
    return state_sentences(category.replace("-", " "), TEMPLATES)


def default_features(layers: int) -> Tuple[int, ...]:
    """Upstream ``train.py``: blocks ``n // 4 * (1, 2, 3, 4)`` of an n-block vision encoder."""
    q = layers // 4
    return (q, 2 * q, 3 * q, 4 * q)


class ProjectLayer(nn.Module):
    """Upstream ``ProjectLayer``: ``head[i] = Linear(dim_in, dim_out)``, ``n`` of them."""

    def __init__(self, dim_in: int, dim_out: int, n: int):
        super().__init__()
        self.head = nn.ModuleList([nn.Linear(dim_in, dim_out) for _ in range(n)])

    def each(self, tokens: Sequence[Tensor]) -> List[Tensor]:
        """head[i] on the patch tokens of tokens[i] ([B, 1 + N, D], CLS dropped)."""
        return [h(t[:, 1:, :]) for h, t in zip(self.head, tokens)]

    def stacked(self, x: Tensor) -> Tensor:
        """[B, n, dim_out]: every head on ``x`` [B, dim_in]."""
        return torch.stack([h(x) for h in self.head], dim=1)


class StaticPrompts(nn.Module):
    """``static_prompts[k]`` [length, width] for the first ``depth`` layers (std 0.02)."""

    def __init__(self, width: int, length: int, depth: int, enabled: bool):
        super().__init__()
        if enabled:
            self.static_prompts = nn.ParameterList(
                [nn.Parameter(torch.empty(length, width)) for _ in range(depth)])
            for p in self.static_prompts:
                nn.init.normal_(p, std=0.02)


class AdaCLIPLearner(nn.Module):
    """Every trainable tensor of AdaCLIP (see the module docstring for the names)."""

    def __init__(self, vision_width: int, text_width: int, embed_dim: int, n_layers: int,
                 length: int, depth: int, branch: str, prompting_type: str):
        super().__init__()
        self.length, self.depth = length, depth
        self.branch, self.prompting_type = branch, prompting_type
        static = "S" in prompting_type
        self.text_prompter = StaticPrompts(text_width, length, depth, static and "L" in branch)
        if static and "L" in branch:
            # the text encoder's layer 0 sees the sentence unchanged, so upstream's layer-0 text
            # prompt never gets a gradient: kept (released files hold it) but frozen, so it is
            # not counted, optimised or saved as trainable
            self.text_prompter.static_prompts[0].requires_grad_(False)
        self.visual_prompter = StaticPrompts(vision_width, length, depth,
                                             static and "V" in branch)
        self.patch_token_layer = ProjectLayer(vision_width, embed_dim, n_layers)
        self.cls_token_layer = ProjectLayer(embed_dim, embed_dim, 1)
        if "D" in prompting_type:
            self.dynamic_visual_prompt_generator = ProjectLayer(embed_dim, vision_width, length)
            self.dynamic_text_prompt_generator = ProjectLayer(embed_dim, text_width, length)

    def layer_prompts(self, which: str, dynamic: Optional[Tensor], batch: int
                      ) -> Optional[List[Tensor]]:
        """Per layer k < depth, the [B, length, width] prompts of ``which`` ("V" or "L"):
        static + dynamic, static or dynamic by PROMPTING_TYPE; None when that branch is off."""
        if which not in self.branch or not self.prompting_type:
            return None
        prompter = self.visual_prompter if which == "V" else self.text_prompter
        out = []
        for k in range(self.depth):
            p = dynamic if "D" in self.prompting_type else 0
            if "S" in self.prompting_type:
                p = p + prompter.static_prompts[k].unsqueeze(0).expand(batch, -1, -1)
            out.append(p)
        return out


def hybrid_semantic_fusion(tokens: Sequence[Tensor], logits: Sequence[Tensor],
                           k_clusters: int) -> Tensor:
    """[B, E]: HSF's clustered abnormal feature (see the module docstring). ``tokens`` are the
    projected, normalised patch tokens [B, N, E] per layer, ``logits`` the [B, N, 2] maps."""
    from sklearn.cluster import KMeans

    prob = torch.softmax(torch.stack(list(logits), dim=1).mean(dim=1), dim=2)[:, :, 1]
    n = prob.shape[1]
    if k_clusters > n:
        raise ValueError(f"TRAINER.ADACLIP.K_CLUSTERS {k_clusters} exceeds the {n} patch tokens "
                         f"of this input: HSF clusters at most one cluster per patch")
    top = torch.topk(prob, k=min(n, 5 * k_clusters), dim=1).indices
    selected = [t.gather(1, top.unsqueeze(-1).expand(-1, -1, t.shape[-1])) for t in tokens]
    stacked = torch.cat(selected, dim=2)
    kmeans = KMeans(n_clusters=k_clusters, n_init="auto")
    centres = []
    for b in range(stacked.shape[0]):
        labels = torch.from_numpy(
            np.asarray(kmeans.fit_predict(stacked[b].detach().float().cpu().numpy()))
        ).to(stacked.device)
        per_cluster = [torch.cat([s[b][labels == c] for s in selected]).mean(dim=0)
                       for c in range(k_clusters)]
        centres.append(torch.stack(per_cluster).mean(dim=0))
    return F.normalize(torch.stack(centres), dim=1)


class AdaCLIPModel(nn.Module):
    """Frozen CLIP + :class:`AdaCLIPLearner`; ``forward(images, categories, aggregation)``."""

    def __init__(self, clip_model: CLIP, learner: AdaCLIPLearner, layers: Sequence[int],
                 use_hsf: bool, k_clusters: int):
        super().__init__()
        self.clip = clip_model
        self.learner = learner
        self.layers = list(layers)
        self.use_hsf = use_hsf
        self.k_clusters = k_clusters
        self._tokens: Dict[str, Tuple[Tensor, int]] = {}
        self._fixed_text: Dict[str, Tensor] = {}

    # ------------------------------------------------------------------ encoders
    def dynamic_prompts(self, images: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """([B, length, vision width], [B, length, text width]) from the frozen image feature
        (None without 'D')."""
        if "D" not in self.learner.prompting_type:
            return None, None
        with torch.no_grad():
            feat = self.clip.visual.forward_features(images, ()).pooled.float()
        return (self.learner.dynamic_visual_prompt_generator.stacked(feat),
                self.learner.dynamic_text_prompt_generator.stacked(feat))

    def encode_image(self, images: Tensor, prompts: Optional[List[Tensor]]
                     ) -> Tuple[Tensor, List[Tensor]]:
        """(image feature [B, E], tokens [B, 1 + N, width] after each of ``layers``), with the
        per-layer visual ``prompts`` appended after ``ln_pre`` (None: unprompted)."""
        visual = self.clip.visual
        x = visual.ln_pre(visual.embed(images))
        if prompts is None:
            x, tokens = visual.transformer.forward_collect(x, self.layers)
        else:
            n = prompts[0].shape[1]
            x = torch.cat([x, prompts[0].to(x.dtype)], dim=1)
            x, tokens = visual.transformer.forward_collect(
                x, self.layers, [p.to(x.dtype) for p in prompts[1:]],
                prompt_start=x.shape[1] - n)
            tokens = [t[:, :-n] for t in tokens]
        return visual.ln_post(x[:, 0]) @ visual.proj, tokens

    def sentence_tokens(self, category: str) -> Tuple[Tensor, int]:
        """(token ids [S, 77] of the normal then abnormal sentences, number of normal ones)."""
        if category not in self._tokens:
            normal, abnormal = adaclip_sentences(category)
            self._tokens[category] = (tokenize(normal + abnormal), len(normal))
        return self._tokens[category]

    def encode_text(self, categories: Sequence[str], prompts: Optional[List[Tensor]]) -> Tensor:
        """[B, E, 2]: each image's normal / abnormal ensemble features through the text encoder
        with that image's per-layer ``prompts`` (None: frozen, cached per category)."""
        device = self.clip.token_embedding.weight.device
        if prompts is None:
            for c in set(categories) - set(self._fixed_text):
                self._fixed_text[c] = encode_prompt_ensemble(self.clip, adaclip_sentences(c)).t()
            return torch.stack([self._fixed_text[c] for c in categories]).to(device)
        out = []
        for b, category in enumerate(categories):
            ids, n_normal = self.sentence_tokens(category)
            ids = ids.to(device)
            deep = [p[b] for p in prompts[1:]]
            feats = self.clip.encode_text_embeddings(self.clip.token_embedding(ids),
                                                     ids.argmax(dim=-1), deep)
            feats = F.normalize(feats.float(), dim=-1)
            states = [feats[:n_normal].mean(dim=0), feats[n_normal:].mean(dim=0)]
            out.append(torch.stack([s / s.norm() for s in states], dim=1))
        return torch.stack(out)

    # ------------------------------------------------------------------ forward
    def forward(self, images: Tensor, categories: Sequence[str], aggregation: bool
                ) -> Tuple[object, Tensor]:
        """Training (``aggregation`` False): ([B, 2, H, W] probabilities per layer, image
        probabilities [B, 2]). Evaluation: (map [B, H, W], abnormal image probability [B])."""
        learner = self.learner
        dyn_v, dyn_t = self.dynamic_prompts(images)
        batch = images.shape[0]
        pooled, tokens = self.encode_image(images, learner.layer_prompts("V", dyn_v, batch))
        text = self.encode_text(categories, learner.layer_prompts("L", dyn_t, batch))
        patches = [p / p.norm(dim=-1, keepdim=True)
                   for p in learner.patch_token_layer.each([t.float() for t in tokens])]
        cls = learner.cls_token_layer.head[0](pooled.float())
        cls = cls / cls.norm(dim=-1, keepdim=True)
        logits = [100.0 * p @ text for p in patches]
        if self.use_hsf:
            fused = hybrid_semantic_fusion(patches, logits, self.k_clusters)
            cls = F.normalize(HSF_ALPHA * fused + (1 - HSF_ALPHA) * cls, dim=1)
        score = torch.softmax((100.0 * cls.unsqueeze(1) @ text).squeeze(1), dim=1)
        maps = []
        for lg in logits:
            side = math.isqrt(lg.shape[1])
            maps.append(F.interpolate(lg.permute(0, 2, 1).reshape(batch, 2, side, side),
                                      size=tuple(images.shape[-2:]), mode="bilinear",
                                      align_corners=True))
        if not aggregation:
            return [torch.softmax(m, dim=1) for m in maps], score
        prob = torch.softmax(torch.stack(maps, dim=1).mean(dim=1), dim=1)
        return (prob[:, 1] + 1 - prob[:, 0]) / 2.0, score[:, 1]


def adaclip_loss(maps: Sequence[Tensor], score: Tensor, masks: Tensor, labels: Tensor
                 ) -> Dict[str, Tensor]:
    """Upstream ``train_one_batch``: focal(image probabilities, label) + per layer
    [focal(P, M) + Dice(P_abn, M) + Dice(P_norm, 1 - M)], M = masks > 0.5. Upstream squeezes the
    mask ``gt.squeeze()``; at its batch size 1 that drops the batch axis, so its Dice is taken over
    the image ROWS (N = H in ``BinaryDiceLoss``): reproduced here for batch 1."""
    gt = (masks.reshape(masks.shape[0], *masks.shape[-2:]) > 0.5).float()
    if gt.shape[0] == 1:
        gt = gt[0]
    cls = focal_loss_softmax(score, (labels > 0.5).long())
    focal = sum(focal_loss_softmax(m, gt) for m in maps)
    dice_abn = sum(binary_dice_loss(m[:, 1], gt) for m in maps)
    dice_norm = sum(binary_dice_loss(m[:, 0], 1 - gt) for m in maps)
    return {"loss": cls + focal + dice_abn + dice_norm, "cls": cls, "focal": focal,
            "dice_abnormal": dice_abn, "dice_normal": dice_norm}
