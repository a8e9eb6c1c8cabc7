"""APRIL-GAN (VAND 2023 zero-shot winner; Chen, Han, Zhang, arXiv 2305.17382; reference code
ByChelsea/VAND-APRIL-GAN: ``train.py``, ``test.py``, ``model.py``, ``loss.py``,
``prompt_ensemble.py``).

Text: per category ``c`` and state s (normal, abnormal), the prompt ensemble of
``STATE_WORDS[s] x TEMPLATES`` (7 normal and 5 abnormal state words x 35 templates, e.g.
"a bad photo of a flawless bottle."): the normalised mean of the normalised features,
``T(c)`` [E, 2], computed once with the frozen text encoder.

Pixels: for each block l of FEATURES_LIST (1-based, the raw residual stream), the patch tokens go
through that block's own ``nn.Linear(width, embed_dim)`` (``LinearLayer.fc[l]``, the only
trainable weights), are L2-normalised, and ``100 * t @ T(c)`` [B, N, 2] is resized bilinearly
(align_corners=True) to the input size, then softmaxed over the two states. Anomaly map = sum
over the blocks of the abnormal probability (range 0..len(FEATURES_LIST)).
Image score (zero-shot): ``softmax(100 * normalize(ln_post(CLS) @ proj) @ T(c))[abnormal]``.

Loss (training only the linear layers, on another dataset's test split): per block,
``FocalLoss()(P_l, M) + BinaryDiceLoss()(P_l[:, 1], M)`` (focal gamma 2 with label smoothing
1e-5, Dice smooth 1; :mod:`dassl_lite.engine.anomaly_core`), summed over the blocks, M the mask
at the input size thresholded at 0.5. There is no image-level loss. Adam, lr 1e-3, betas
(0.5, 0.999), batch 8; 3 epochs on MVTec AD (with mosaic augmentation, AUG_RATE 0.2: with that
probability a training item is a 2x2 mosaic of four images of its category, made by the data
layer, :mod:`dassl_lite.data.anomaly`) or 15 on VisA (no mosaic upstream).

Few-shot (``DATASET.NUM_SHOTS`` k > 0, evaluation): per category the raw patch tokens of
FEW_SHOT_FEATURES of k normal training images form a memory bank per block; a test patch gets
``min_bank (1 - cos)`` per block, resized as above and summed over blocks, added to the map.
Image score = ``0.5 * (text score + minmax(max(map)))`` where the min-max normalisation is over
all test images of the category (transductive, as ``test.py``; applied after the last batch).

Encoder, as upstream builds it at 518 px from OpenAI weights (``create_model_and_transforms``
with an image size other than the model's): the positional embedding resized by open_clip's
``resize_pos_embed`` (bicubic with antialiasing, ``pos_interpolation "bicubic_antialias"``), and
the model rebuilt from its json config, so both encoders run the exact ``nn.GELU`` instead of
the QuickGELU the weights were trained with (``GELU "upstream"``; ``"backbone"`` keeps QuickGELU).

Checkpoints hold only ``LinearLayer`` (state-dict names ``fc.<i>.weight/bias``, as upstream's
``trainable_linearlayer``); released files are imported by ``tools/convert_aprilgan.py``.
Differences from upstream: the k references are drawn by the dataset with the run's seed (upstream
``torch.randint``, with replacement), the encoder runs once for both layer lists, and the
evaluator's Gaussian smoothing is off in the APRIL-GAN configs (``TEST.ANOMALY.MAP_SIGMA 0``; upstream
does not smooth), and the mosaic draws use a generator seeded by the run's seed, the epoch and
the item (upstream: Python's global ``random``).
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP, use_exact_gelu
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.config.validate import check_number
from dassl_lite.engine.anomaly import AnomalyTrainer
from dassl_lite.engine.anomaly_core import (ReleasedWeightsError, binary_dice_loss,
                                            encode_prompt_ensemble, focal_loss_softmax,
                                            load_released_weights, min_cosine_distance,
                                            state_sentences)
from dassl_lite.optim import build_lr_scheduler, build_optimizer
from dassl_lite.registry import TRAINER_REGISTRY

from ..prompting import load_dense_vit

logger = logging.getLogger(__name__)

TEMPLATES = (
    "a bad photo of a {}.", "a low resolution photo of the {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a bright photo of a {}.", "a dark photo of the {}.",
    "a photo of my {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a photo of one {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "a low resolution photo of a {}.", "a photo of a large {}.",
    "a blurry photo of a {}.", "a jpeg corrupted photo of the {}.", "a good photo of a {}.",
    "a photo of the small {}.", "a photo of the large {}.", "a black and white photo of a {}.",
    "a dark photo of a {}.", "a photo of a cool {}.", "a photo of a small {}.",
    "there is a {} in the scene.", "there is the {} in the scene.", "this is a {} in the scene.",
    "this is the {} in the scene.", "this is one {} in the scene.")


@register_config_extender("APRILGAN")
def add_aprilgan_config(cfg: CN) -> None:
    """``TRAINER.APRILGAN`` with upstream's names and its ViT-L-14-336 / 518 px run's values."""
    cfg.TRAINER.APRILGAN = CN()
    c = cfg.TRAINER.APRILGAN
    c.FEATURES_LIST = (6, 12, 18, 24)  # 1-based blocks, one linear layer each
    c.FEW_SHOT_FEATURES = (6, 12, 18, 24)  # blocks stored in the few-shot memory bank
    c.AUG_RATE = 0.2  # probability of a 2x2 mosaic training item (upstream's --aug_rate default;
    # its VisA dataset class ignores it: the VisA config sets 0)
    c.PREC = "fp32"  # upstream: fp32 weights under torch.cuda.amp.autocast (use "amp" on GPU)
    # MLP activation of both encoders: "upstream" = exact nn.GELU when INPUT.SIZE is not the
    # backbone's resolution (upstream's create_model_and_transforms then rebuilds the OpenAI model
    # from the json config, whose quick_gelu is off), else the backbone's own; "backbone": always
    # the backbone's own (QuickGELU for OpenAI weights)
    c.GELU = "upstream"


def state_prompts(category: str) -> List[List[str]]:
    """[[normal prompts], [abnormal prompts]], state word x template as ``prompt_ensemble.py``
    (the category name is used as given: upstream's names hold underscores for VisA)."""
    return state_sentences(category, TEMPLATES)


class LinearLayer(nn.Module):
    """Upstream ``model.LinearLayer`` for ViTs: ``fc[i] = nn.Linear(width, embed_dim)`` per
    chosen block, applied to the patch tokens (CLS dropped)."""

    def __init__(self, dim_in: int, dim_out: int, k: int):
        super().__init__()
        self.fc = nn.ModuleList([nn.Linear(dim_in, dim_out) for _ in range(k)])

    def forward(self, tokens: Sequence[Tensor]) -> List[Tensor]:
        return [fc(t[:, 1:, :]) for fc, t in zip(self.fc, tokens)]


def text_maps(projected: Sequence[Tensor], text: Tensor, size: Sequence[int]) -> List[Tensor]:
    """Per block: [B, 2, H, W] state probabilities of the projected patch tokens [B, N, E]
    against ``text`` [B, E, 2], resized bilinearly (align_corners=True) before the softmax."""
    maps = []
    for p in projected:
        p = p / p.norm(dim=-1, keepdim=True)
        logits = 100.0 * p @ text
        b, n, c = logits.shape
        side = math.isqrt(n)
        logits = F.interpolate(logits.permute(0, 2, 1).reshape(b, c, side, side),
                               size=tuple(size), mode="bilinear", align_corners=True)
        maps.append(torch.softmax(logits, dim=1))
    return maps


def aprilgan_loss(maps: Sequence[Tensor], masks: Tensor) -> Dict[str, Tensor]:
    """Sum over blocks of focal(P, M) + Dice(P[:, 1], M); M = masks > 0.5 ([B, H, W])."""
    gt = (masks.reshape(masks.shape[0], *masks.shape[-2:]) > 0.5).float()
    focal = sum(focal_loss_softmax(m, gt) for m in maps)
    dice = sum(binary_dice_loss(m[:, 1], gt) for m in maps)
    return {"loss": focal + dice, "focal": focal, "dice": dice}


def memory_map(tokens: Sequence[Tensor], banks: Sequence[Tensor], size: Sequence[int]) -> Tensor:
    """[B, H, W]: sum over blocks of ``min_bank (1 - cos)`` per patch (raw tokens [B, 1 + N, D],
    CLS dropped; banks [M, D] normalised), resized bilinearly (align_corners=True)."""
    total = 0
    for t, bank in zip(tokens, banks):
        b, n = t.shape[0], t.shape[1] - 1
        dist = torch.stack([min_cosine_distance(t[i, 1:].float(), bank) for i in range(b)])
        side = math.isqrt(n)
        total = total + F.interpolate(dist.reshape(b, 1, side, side), size=tuple(size),
                                      mode="bilinear", align_corners=True)[:, 0]
    return total


class APRILGANModel(nn.Module):
    """Frozen CLIP + :class:`LinearLayer`; ``forward(images, text)`` with ``text`` [B, E, 2]."""

    def __init__(self, clip_model: CLIP, learner: LinearLayer, layers: Sequence[int]):
        super().__init__()
        self.clip = clip_model
        self.learner = learner
        self.layers = list(layers)

    def forward(self, images: Tensor, text: Tensor, extra_layers: Sequence[int] = ()
                ) -> Dict[str, Any]:
        wanted = sorted(set(self.layers) | set(extra_layers))
        with torch.no_grad():
            feats = self.clip.visual.forward_features(images, wanted)
            blocks = dict(zip(wanted, feats.tokens))
        projected = self.learner([blocks[i].float() for i in self.layers])
        maps = text_maps(projected, text, images.shape[-2:])
        pooled = F.normalize(feats.pooled.float(), dim=-1)
        image_prob = torch.softmax(100.0 * (pooled[:, None] @ text)[:, 0], dim=-1)[:, 1]
        return {"maps": maps, "image_score": image_prob,
                "anomaly_map": sum(m[:, 1] for m in maps),
                "blocks": [blocks[i] for i in extra_layers]}


@TRAINER_REGISTRY.register()
class APRILGAN(AnomalyTrainer):
    """APRIL-GAN; config section ``TRAINER.APRILGAN``; checkpoints in ``LinearLayer/``."""

    precision_key = "TRAINER.APRILGAN.PREC"
    model_name = "LinearLayer"
    # rows of tools/anomaly.py --table: (label, config under configs/trainers/APRILGAN/, shots)
    TABLE_ROWS = (("APRILGAN zero-shot", "toy", (0,)), ("APRILGAN few-shot", "toy", (1,)))

    def check_cfg(self, cfg) -> None:
        c = cfg.TRAINER.APRILGAN
        if c.GELU not in ("upstream", "backbone"):
            raise ConfigError(f"TRAINER.APRILGAN.GELU must be 'upstream' or 'backbone'; "
                              f"got {c.GELU!r}")
        if not c.FEATURES_LIST:
            raise ConfigError("TRAINER.APRILGAN.FEATURES_LIST must name at least one block")
        check_number("TRAINER.APRILGAN.AUG_RATE", c.AUG_RATE, 0.0, 1.0)

    mosaic_key = "TRAINER.APRILGAN.AUG_RATE"

    def mosaic_rate(self) -> float:
        """Upstream's mosaic augmentation (``MVTecDataset.combine_img``) at ``AUG_RATE``."""
        return float(self.cfg.TRAINER.APRILGAN.AUG_RATE)

    def build_model(self) -> None:
        cfg, c = self.cfg, self.cfg.TRAINER.APRILGAN
        self.clip = load_dense_vit(cfg, self.precision.model_dtype, self.device, "APRILGAN")
        visual = self.clip.visual
        for key in ("FEATURES_LIST", "FEW_SHOT_FEATURES"):
            bad = [i for i in c[key] if not 1 <= i <= visual.layers]
            if bad:
                raise ConfigError(f"TRAINER.APRILGAN.{key} {list(c[key])} has blocks {bad} that "
                                  f"backbone {cfg.MODEL.BACKBONE.NAME!r} does not have: its "
                                  f"vision encoder has blocks 1..{visual.layers} (1-based)")
        visual.pos_interpolation = "bicubic_antialias"  # open_clip's resize_pos_embed (AA)
        if c.GELU == "upstream" and tuple(cfg.INPUT.SIZE) != (visual.input_resolution,) * 2:
            use_exact_gelu(self.clip)
            logger.info("APRIL-GAN: exact GELU in both encoders (INPUT.SIZE %s is not the "
                        "backbone's %d px: upstream's open_clip rebuild, TRAINER.APRILGAN.GELU)",
                        list(cfg.INPUT.SIZE), visual.input_resolution)
        learner = LinearLayer(visual.width, visual.proj.shape[1], len(c.FEATURES_LIST)).float()
        self.model = APRILGANModel(self.clip, learner, c.FEATURES_LIST).to(self.device)
        logger.info(f"APRIL-GAN: {sum(p.numel() for p in learner.parameters()):,} trainable "
                    f"values ({len(c.FEATURES_LIST)} x Linear({visual.width}, "
                    f"{visual.proj.shape[1]})), blocks {list(c.FEATURES_LIST)}")
        self.optim = build_optimizer(learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.model_name, learner, self.optim, self.sched)
        self.text: Dict[str, Tensor] = {}
        self.memory: Optional[Dict[str, List[Tensor]]] = None
        self._fewshot: Dict[str, List[float]] = defaultdict(list)

    def text_features(self, categories: Sequence[str]) -> Tensor:
        """[B, E, 2] prompt-ensemble features of each image's category (cached)."""
        for c in set(categories) - set(self.text):
            with self.precision.autocast():
                self.text[c] = encode_prompt_ensemble(self.clip, state_prompts(c)).t()
        return torch.stack([self.text[c] for c in categories]).to(self.device)

    # ------------------------------------------------------------------ train
    def forward_backward(self, batch: Dict[str, Any]) -> Dict[str, float]:
        images, masks, _ = self.parse_batch_anomaly(batch)
        text = self.text_features(list(batch["category"]))
        with self.precision.autocast():
            out = self.model(images, text)
        terms = aprilgan_loss([m.float() for m in out["maps"]], masks)
        self.model_backward_and_update(terms["loss"])
        return {k: v.item() for k, v in terms.items()}

    # ------------------------------------------------------------------ evaluation
    def before_test(self) -> None:
        self._fewshot.clear()
        if self.cfg.DATASET.NUM_SHOTS > 0 and self.memory is None:
            layers = list(self.cfg.TRAINER.APRILGAN.FEW_SHOT_FEATURES)
            self.memory = {}
            for category in self.dm.dataset.categories:
                images = self.reference_images(category)
                with torch.no_grad(), self.precision.autocast():
                    tokens = self.clip.visual.forward_features(images, layers).tokens
                self.memory[category] = [F.normalize(t[:, 1:].float().flatten(0, 1), dim=-1)
                                         for t in tokens]
                logger.info("Memory bank %r: %d reference images", category, images.shape[0])

    @torch.no_grad()
    def model_inference(self, images: Tensor) -> Dict[str, Tensor]:
        categories = self.batch_categories
        extra = list(self.cfg.TRAINER.APRILGAN.FEW_SHOT_FEATURES) if self.memory else []
        out = self.model(images, self.text_features(categories), extra)
        amap = out["anomaly_map"].float()
        if self.memory:
            amap = amap + torch.stack([
                memory_map([t[i:i + 1] for t in out["blocks"]], self.memory[c],
                           images.shape[-2:])[0] for i, c in enumerate(categories)])
            for c, m in zip(categories, amap.flatten(1).max(dim=1).values.tolist()):
                self._fewshot[c].append(m)
        return {"image_score": out["image_score"], "anomaly_map": amap}

    def after_test(self) -> None:
        """Few-shot: image score = 0.5 (text score + the map maximum min-max normalised over the
        category's test images), as upstream's ``test.py``."""
        if not self.memory:
            return
        for category, maxima in self._fewshot.items():
            m = torch.tensor(maxima, dtype=torch.float64)
            span = m.max() - m.min()
            norm = (m - m.min()) / span if span > 0 else torch.zeros_like(m)
            text = torch.tensor(self.evaluator.image_scores(category), dtype=torch.float64)
            self.evaluator.set_image_scores(category, (0.5 * (text + norm)).tolist())


def convert_upstream(path: str, features_list: Sequence[int]) -> "Dict[str, Tensor]":
    """Upstream's ``epoch_<n>.pth`` (``{'trainable_linearlayer': state_dict}``, read with
    ``weights_only=True``) -> a :class:`LinearLayer` state dict, checked against
    ``len(features_list)`` linear layers of one shape."""
    obj = load_released_weights(path, "checkpoint", "APRIL-GAN")
    if not isinstance(obj, dict) or "trainable_linearlayer" not in obj:
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ReleasedWeightsError(f"{path!r}: expected APRIL-GAN's checkpoint dict with key "
                                   f"'trainable_linearlayer'; got {got}")
    state = obj["trainable_linearlayer"]
    expected = [f"fc.{i}.{p}" for i in range(len(features_list)) for p in ("weight", "bias")]
    if not isinstance(state, dict) or sorted(state) != sorted(expected):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ReleasedWeightsError(f"{path!r}: linear-layer keys {got} differ from the "
                                   f"{len(features_list)} layers of FEATURES_LIST "
                                   f"{list(features_list)}: expected {expected}")
    shapes = {tuple(state[k].shape) for k in expected if k.endswith("weight")}
    if len(shapes) != 1:
        raise ReleasedWeightsError(f"{path!r}: the linear layers differ in shape: {sorted(shapes)}")
    return {k: state[k].detach().float().clone() for k in expected}
