"""AF-CLIP: Zero-Shot Anomaly Detection via Anomaly-Focused CLIP Adaptation (Fang, Lv, Su,
ACM MM 2025, https://arxiv.org/abs/2507.19949; reference code Faustinaqq/AF-CLIP).

State features: a learned prompt ``P`` [PROMPT_LEN, d_t] (N(0, 0.01)) placed BEFORE SOT of both
"without defect." and "with defect." (``[P, SOT, ..., EOT]`` cut to 77, feature at
``PROMPT_LEN + argmax(tokens)``); ``t_0, t_1`` normalised.

Image side, for each block l in FEATURE_LAYERS (raw residual stream, CLS included) and each
r in AGG_SIZES: ``X_{l,r}`` = patch tokens smoothed by a normalised r x r Gaussian (sigma
AGG_SIGMA, zero padding; CLS unchanged); ``F_{l,r} = ln_post(A(X_{l,r})) @ proj`` with one
shared attention adaptor ``A`` (no residual) and CLIP's frozen ``ln_post``/``proj``.

``p = softmax(sum_{l,r} <F_{l,r}/|F|, t_s> / TEMPERATURE)`` over s in {normal, abnormal};
image score = abnormal probability at CLS, anomaly map = abnormal probability per patch.

Loss: ``focal(p_cls, y) + LAMBDA1 (focal(P, M) + L1(P, M)) + LAMBDA2 L_pal`` (focal gamma
FOCAL_GAMMA on probabilities; M = the mask resized bilinearly to the grid, 0 below 0.5, 1 above,
0.5 kept; L_pal see :mod:`trainers.anomaly.afclip_losses`). Adam, lr 1e-4, betas (0.5, 0.999),
2 epochs, batch 8, trained on ANOTHER dataset's test split (``DATASET.ANOMALY.TRAIN_SPLIT test``).

Gradient (``SEG_GRADIENT``), by default the paper's training: ``"upstream"`` reproduces the
published code's gradient, in which the map's focal term is differentiated with target -1 at
normal patches (upstream's ``copy.copy(gts)`` shares storage with the targets and overwrites
them in place after they were saved for backward; the loss value is unaffected). The released
weights were trained that way. ``"corrected"`` differentiates the loss as written (relative
gradient difference about 0.45 on the same batch; see :mod:`trainers.anomaly.afclip_losses`).

Masks: upstream resizes the 0/255 mask with PIL bicubic and keeps the float result
(``INPUT.MASK_INTERPOLATION pil_bicubic``, set in configs/trainers/AFCLIP/*.yaml); the grid
above and the evaluator's ``> 0.5`` threshold start from it.

Few-shot (``DATASET.NUM_SHOTS`` k > 0, evaluation): per test category, the raw aggregated
MEMORY_LAYERS tokens of k normal training images (drawn with the run's SEED by the dataset;
upstream leaves the draw unseeded) form a memory bank; map = ``map_mem + ALPHA map``, score =
``max(map_mem) + ALPHA p_cls``.

Checkpoints hold only the prompt and the adaptor (``AFCLIPLearner/``); the released upstream
files are imported by ``tools/convert_afclip.py`` (never by ``--model-dir``).
Differences from upstream (same numerics): SDPA attention in the adaptor, a depthwise conv for
the aggregation, the closed-form L_pal, the positional embedding interpolated per forward
instead of written into the model, and the state features computed once per evaluation.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import torch
from yacs.config import CfgNode as CN

from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.engine.anomaly import AnomalyTrainer
from dassl_lite.optim import build_lr_scheduler, build_optimizer
from dassl_lite.registry import TRAINER_REGISTRY

from .afclip_losses import SEG_GRADIENTS, afclip_loss
from .afclip_model import AFCLIPLearner, AFCLIPModel, MemoryBank
from ..prompting import load_frozen_clip

logger = logging.getLogger(__name__)


@register_config_extender("AFCLIP")
def add_afclip_config(cfg: CN) -> None:
    """``TRAINER.AFCLIP`` with the reference code's defaults (ViT-L/14@336px at 518 px)."""
    cfg.TRAINER.AFCLIP = CN()
    c = cfg.TRAINER.AFCLIP
    c.PROMPT_LEN = 12  # learned vectors before SOT, shared by the two state texts
    c.FEATURE_LAYERS = (6, 12, 18, 24)  # 1-based ViT blocks whose outputs are scored
    c.MEMORY_LAYERS = (6, 12, 18, 24)  # blocks stored in the few-shot memory bank
    c.AGG_SIZES = (1, 3, 5)  # Gaussian neighbourhood sizes (1 = the token itself)
    c.AGG_SIGMA = 4.0  # sigma of the aggregation kernel
    c.TEMPERATURE = 0.07  # logits = cos / TEMPERATURE, summed over the maps
    c.FOCAL_GAMMA = 4.0
    c.LAMBDA1 = 1.0  # weight of focal + L1 on the map
    c.LAMBDA2 = 1.0  # weight of the patch-alignment loss
    c.ALPHA = 0.1  # few-shot fusion: memory score + ALPHA * text score
    c.ADAPTOR_HEADS = 8
    c.ADAPTOR_HEAD_DIM = 64
    c.PREC = "fp32"  # upstream runs the whole model in fp32
    # "upstream" (default, the paper's training: the map's focal term differentiated with
    # target -1 at normal patches, upstream's copy.copy aliasing) or "corrected"
    c.SEG_GRADIENT = "upstream"


@TRAINER_REGISTRY.register()
class AFCLIP(AnomalyTrainer):
    """AF-CLIP; config section ``TRAINER.AFCLIP``; checkpoints in ``AFCLIPLearner/``."""

    precision_key = "TRAINER.AFCLIP.PREC"
    model_name = "AFCLIPLearner"
    # rows of tools/anomaly.py --table: (label, config under configs/trainers/AFCLIP/, shots)
    TABLE_ROWS = (("AF-CLIP zero-shot", "toy", (0,)), ("AF-CLIP few-shot", "toy", (1,)))

    def check_cfg(self, cfg) -> None:
        c = cfg.TRAINER.AFCLIP
        if c.PROMPT_LEN < 0 or c.TEMPERATURE <= 0 or not c.FEATURE_LAYERS or not c.AGG_SIZES:
            raise ConfigError(f"TRAINER.AFCLIP needs PROMPT_LEN >= 0, TEMPERATURE > 0 and non-empty "
                              f"FEATURE_LAYERS / AGG_SIZES; got {c.PROMPT_LEN}, {c.TEMPERATURE}, "
                              f"{list(c.FEATURE_LAYERS)}, {list(c.AGG_SIZES)}")
        if c.SEG_GRADIENT not in SEG_GRADIENTS:
            raise ConfigError(f"TRAINER.AFCLIP.SEG_GRADIENT must be one of "
                              f"{', '.join(SEG_GRADIENTS)}; got {c.SEG_GRADIENT!r}")
        bad = [r for r in c.AGG_SIZES if r < 1 or r % 2 == 0]
        if bad:
            raise ConfigError(f"TRAINER.AFCLIP.AGG_SIZES must be odd sizes >= 1; got "
                              f"{list(c.AGG_SIZES)}")

    # ------------------------------------------------------------------ build
    def build_model(self) -> None:
        cfg, c = self.cfg, self.cfg.TRAINER.AFCLIP
        clip_model = load_frozen_clip(cfg, self.precision.model_dtype, self.device,
                                      check_size=False)
        self.check_layers(clip_model.visual.layers)
        learner = AFCLIPLearner(clip_model, c.PROMPT_LEN, c.ADAPTOR_HEADS, c.ADAPTOR_HEAD_DIM)
        learner.float()
        self.model = AFCLIPModel(clip_model, learner, c.FEATURE_LAYERS, c.AGG_SIZES, c.AGG_SIGMA,
                                 c.TEMPERATURE).to(self.device)
        count = sum(p.numel() for p in learner.parameters())
        logger.info(f"AF-CLIP: {count:,} trainable values (prompt {c.PROMPT_LEN} x "
                    f"{clip_model.transformer.width}, adaptor); blocks {list(c.FEATURE_LAYERS)}, "
                    f"aggregation {list(c.AGG_SIZES)}; map gradient {c.SEG_GRADIENT!r} "
                    f"(upstream: the published training); masks resized with "
                    f"INPUT.MASK_INTERPOLATION {cfg.INPUT.MASK_INTERPOLATION!r} (upstream: "
                    f"'pil_bicubic')")
        self.optim = build_optimizer(learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.model_name, learner, self.optim, self.sched)
        self.memory: Optional[MemoryBank] = None
        if cfg.DATASET.NUM_SHOTS > 0:
            self.memory = MemoryBank(c.MEMORY_LAYERS, c.AGG_SIZES, c.AGG_SIGMA)

    def check_layers(self, depth: int) -> None:
        """FEATURE_LAYERS / MEMORY_LAYERS must be block numbers of this backbone."""
        c = self.cfg.TRAINER.AFCLIP
        for key in ("FEATURE_LAYERS", "MEMORY_LAYERS"):
            bad = [i for i in c[key] if not 1 <= i <= depth]
            if bad:
                raise ConfigError(
                    f"TRAINER.AFCLIP.{key} {list(c[key])} has blocks {bad} that backbone "
                    f"{self.cfg.MODEL.BACKBONE.NAME!r} does not have: its vision encoder has "
                    f"blocks 1..{depth} (1-based); e.g. use {evenly_spaced(depth)}")

    # ------------------------------------------------------------------ train
    def forward_backward(self, batch: Dict[str, Any]) -> Dict[str, float]:
        images, masks, labels = self.parse_batch_anomaly(batch)
        c = self.cfg.TRAINER.AFCLIP
        with self.precision.autocast():
            out = self.model(images)
        terms = afclip_loss(out, labels, masks, c.FOCAL_GAMMA, c.LAMBDA1, c.LAMBDA2,
                            c.SEG_GRADIENT)
        self.model_backward_and_update(terms["loss"])
        return {k: v.item() for k, v in terms.items()}

    # ------------------------------------------------------------------ evaluation
    def before_test(self) -> None:
        self.unwrapped_model.cache_text()
        if self.memory is not None:
            self.store_memory()

    def after_test(self) -> None:
        self.unwrapped_model.clear_text_cache()

    @torch.no_grad()
    def store_memory(self) -> None:
        """One bank per test category from its k normal reference images (``train_x``)."""
        dataset = self.dm.dataset
        for category in dataset.categories:
            refs = [d for d in dataset.train_x if d.category == category and d.label == 0]
            if not refs:
                raise ConfigError(f"few-shot AF-CLIP (DATASET.NUM_SHOTS "
                                  f"{self.cfg.DATASET.NUM_SHOTS}) found no normal reference "
                                  f"image of category {category!r} in the train split")
            wrapper = dataset.dataset_wrapper(self.cfg, refs, transform=self.dm.tfm_test)
            images = torch.stack([wrapper[i]["img"] for i in range(len(refs))]).to(self.device)
            with self.precision.autocast():
                blocks = self.unwrapped_model.block_tokens(images, self.memory.layers)
            self.memory.store(category, blocks)
            logger.info(f"Memory bank {category!r}: {len(refs)} normal images "
                        f"({[d.impath for d in refs]})")

    def evaluate_batch(self, batch: Dict[str, Any], shards) -> None:
        self._categories: List[str] = list(batch["category"])
        super().evaluate_batch(batch, shards)

    def model_inference(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Text scores; few-shot: fused with the memory bank of each image's category (the
        bank's blocks come from the same encoder pass)."""
        extra = self.memory.layers if self.memory is not None else ()
        out = self.model(images, extra_layers=extra)
        result = {"image_score": out["image_score"], "anomaly_map": out["anomaly_map"]}
        if self.memory is None:
            return result
        alpha = self.cfg.TRAINER.AFCLIP.ALPHA
        fused = {k: torch.empty_like(v) for k, v in result.items()}
        for category in sorted(set(self._categories)):
            idx = torch.tensor([i for i, c in enumerate(self._categories) if c == category],
                               device=images.device)
            mem = self.memory.score(category, [out["blocks"][i][idx] for i in extra])
            for k in fused:
                fused[k][idx] = mem[k] + alpha * result[k][idx]
        return fused


def evenly_spaced(depth: int) -> List[int]:
    """Four evenly spaced block numbers ending at ``depth`` (6 12 18 24 for 24 blocks)."""
    return sorted({max(1, depth * i // 4) for i in (1, 2, 3, 4)})
