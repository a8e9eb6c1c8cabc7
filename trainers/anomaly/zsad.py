"""ZeroshotAD: training-free anomaly detection with CLIP patch tokens and state prompts.

For an image of category ``c`` and each chosen vision block ``l`` (``TRAINER.ZSAD.LAYERS``,
1-based; empty = the last block), every patch token ``t`` is mapped to the joint space as CLS is
(``ln_post(t) @ proj``) and compared with two text features of ``c``: the normal state
``T_n(c)`` and the anomalous state ``T_a(c)``, each the re-normalised mean over
``TEMPLATES x NORMAL_STATES`` (e.g. "a photo of a flawless {}.") or ``TEMPLATES x
ANOMALOUS_STATES`` ("a photo of a damaged {}.") of the normalised prompt features::

    p_l(t) = softmax(100 * [cos(t, T_n(c)), cos(t, T_a(c))])[anomalous]
    map    = mean_l p_l                     (patch grid; the evaluator resizes and smooths it)
    score  = max(map)

Few-shot (``DATASET.NUM_SHOTS`` k > 0): the raw patch tokens of the k normal references of each
category, per block, form a memory bank; a test patch scores ``min_bank (1 - cos) / 2``
(mean over blocks), and the map becomes ``(1 - w) * text map + w * memory map`` with
``w = TRAINER.ZSAD.MEMORY_WEIGHT``. The default, 10/11, ranks patches as AF-CLIP's fusion
``memory map + 0.1 * text map`` does: the memory map's values span a far narrower range than
the text probabilities, so an even mix lets the text map decide.

The input may be larger than the backbone's resolution: the ViT interpolates its positional
embedding (``TRAINER.ZSAD.POS_INTERPOLATION``). Nothing is trained or saved.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.config.validate import check_number
from dassl_lite.engine import TrainingFreeAnomalyTrainer
from dassl_lite.engine.anomaly_core import encode_prompt_ensemble, min_cosine_distance
from dassl_lite.registry import TRAINER_REGISTRY

from ..prompting import load_frozen_clip

logger = logging.getLogger(__name__)

TEMPLATES = ("a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.")
NORMAL_STATES = ("flawless {}", "perfect {}", "{} without defect")
ANOMALOUS_STATES = ("damaged {}", "broken {}", "{} with defect")


@register_config_extender("ZeroshotAD")
def add_zsad_config(cfg) -> None:
    """``TRAINER.ZSAD``: precision, scored blocks, position interpolation, few-shot weight."""
    cfg.TRAINER.ZSAD = CN()
    cfg.TRAINER.ZSAD.PREC = "fp32"
    cfg.TRAINER.ZSAD.LAYERS = ()  # 1-based vision blocks whose patch tokens are scored; () last
    cfg.TRAINER.ZSAD.POS_INTERPOLATION = "bicubic"  # for inputs larger than the backbone's
    # few-shot: weight of the memory-bank map; 10/11 = AF-CLIP's "memory + 0.1 * text", rescaled
    cfg.TRAINER.ZSAD.MEMORY_WEIGHT = 10 / 11


def state_prompts(category: str) -> List[List[str]]:
    """[[normal prompts], [anomalous prompts]] of ``category`` (underscores become spaces)."""
    name = category.replace("_", " ")
    return [[t.format(s.format(name)) for t in TEMPLATES for s in states]
            for states in (NORMAL_STATES, ANOMALOUS_STATES)]


def encode_states(clip_model: CLIP, category: str) -> Tensor:
    """[2, E]: the normalised mean text feature of the normal and the anomalous prompts."""
    return encode_prompt_ensemble(clip_model, state_prompts(category))


def patch_tokens(clip_model: CLIP, images: Tensor, layers: Sequence[int]):
    """(list of [B, N, width] raw patch tokens per block, grid (h, w))."""
    feats = clip_model.visual.forward_features(images, layers)
    return [t[:, 1:] for t in feats.tokens], feats.grid


@TRAINER_REGISTRY.register()
class ZeroshotAD(TrainingFreeAnomalyTrainer):
    """Training-free anomaly maps from CLIP patch tokens vs state prompts (module docstring)."""

    precision_key = "TRAINER.ZSAD.PREC"
    # rows of tools/anomaly.py --table: (label, config under configs/trainers/ZeroshotAD/, shots)
    TABLE_ROWS = (("ZeroshotAD zero-shot", "toy", (0,)), ("ZeroshotAD few-shot", "toy", (1,)))

    def build_model(self) -> None:
        cfg = self.cfg.TRAINER.ZSAD
        check_number("TRAINER.ZSAD.MEMORY_WEIGHT", cfg.MEMORY_WEIGHT, 0.0, 1.0)
        self.clip = load_frozen_clip(self.cfg, self.precision.model_dtype, self.device,
                                     check_size=False)
        visual = self.clip.visual
        if not hasattr(visual, "forward_features"):
            raise ConfigError(f"ZeroshotAD needs a ViT backbone (patch tokens); "
                              f"{self.cfg.MODEL.BACKBONE.NAME!r} is not one")
        visual.pos_interpolation = cfg.POS_INTERPOLATION or None
        self.layers = [int(b) for b in cfg.LAYERS] or [visual.layers]
        self.model = self.clip
        with self.precision.autocast():
            self.text = {c: encode_states(self.clip, c) for c in self.dm.dataset.categories}
        logger.info("ZeroshotAD: blocks %s, %d prompts per state, e.g. %s", self.layers,
                    len(TEMPLATES) * len(NORMAL_STATES), state_prompts("bottle")[1][0])
        self.memory: Optional[Dict[str, List[Tensor]]] = None
        if self.cfg.DATASET.NUM_SHOTS > 0:
            self.memory = self.build_memory()

    @torch.no_grad()
    def build_memory(self) -> Dict[str, List[Tensor]]:
        """Per category: per block, the normalised patch tokens of its k reference images."""
        memory = {}
        for category in self.dm.dataset.categories:
            images = self.reference_images(category)
            with self.precision.autocast():
                tokens, _ = patch_tokens(self.clip, images, self.layers)
            memory[category] = [F.normalize(t.float().flatten(0, 1), dim=-1) for t in tokens]
            logger.info("Memory bank %r: %d reference images", category, images.shape[0])
        return memory

    def text_map(self, tokens: List[Tensor], categories: Sequence[str]) -> Tensor:
        """[B, N]: the anomalous-state probability of each patch, mean over blocks."""
        text = torch.stack([self.text[c] for c in categories]).to(tokens[0].device)  # [B, 2, E]
        maps = []
        for t in tokens:
            feats = F.normalize(self.clip.visual.project_tokens(t).float(), dim=-1)
            logits = 100.0 * feats @ text.transpose(1, 2)  # [B, N, 2]
            maps.append(logits.softmax(dim=-1)[..., 1])
        return torch.stack(maps).mean(dim=0)

    def memory_map(self, tokens: List[Tensor], categories: Sequence[str]) -> Tensor:
        """[B, N]: ``min (1 - cos) / 2`` against the category's bank, mean over blocks."""
        out = torch.zeros(tokens[0].shape[:2], device=tokens[0].device)
        for i, category in enumerate(categories):
            for t, bank in zip(tokens, self.memory[category]):
                out[i] += min_cosine_distance(t[i].float(), bank) / 2 / len(tokens)
        return out

    @torch.no_grad()
    def model_inference(self, images: Tensor) -> Dict[str, Tensor]:
        categories = self.batch_categories
        tokens, (h, w) = patch_tokens(self.clip, images, self.layers)
        amap = self.text_map(tokens, categories)
        if self.memory is not None:
            weight = self.cfg.TRAINER.ZSAD.MEMORY_WEIGHT
            amap = (1 - weight) * amap + weight * self.memory_map(tokens, categories)
        amap = amap.view(-1, h, w)
        return {"image_score": amap.flatten(1).max(dim=1).values, "anomaly_map": amap}
