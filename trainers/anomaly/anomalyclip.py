"""AnomalyCLIP: Object-agnostic Prompt Learning for Zero-shot Anomaly Detection (Zhou, Pang,
Tian, He, Chen, ICLR 2024, arXiv 2310.18961; reference code zqhang/AnomalyCLIP: ``train.py``,
``test.py``, ``prompt_ensemble.py``, ``loss.py``, ``AnomalyCLIP_lib/AnomalyCLIP.py``).

Text: two object-agnostic prompts, ``[SOT, V_1..V_N, object, ., EOT]`` (normal) and
``[SOT, W_1..W_N, damaged, object, ., EOT]`` (abnormal), N = N_CTX (12) learned vectors each;
from text layer 1 to DEPTH - 1 (8) the positions 1..T_N_CTX (4) are overwritten by that layer's
learned deep prompt (rounded to fp16 as upstream's ``.half()``, TEXT_PROMPT_FP16). ``t_n, t_a``
= the normalised EOT features.

Image: CLIP's ViT with DPAM in the last DPAM_LAYER - 1 blocks (20: blocks 6..24 of ViT-L/14):
besides the plain residual stream, a second stream accumulates the value-value attention
``softmax(v v^T / sqrt(d)) v`` of each DPAM block (on the plain stream's ``ln_1`` tokens,
without MLP; :func:`dassl_lite.engine.anomaly_core.dpam_forward_features`). Block l of
FEATURES_LIST gives ``F_l = normalize(ln_post(z_l) @ proj)``; the image feature is
``normalize(x_final[CLS] @ proj)`` of the plain stream, without ``ln_post`` (upstream #14).

Maps: for the blocks from index FEATURE_MAP_LAYER[0] of FEATURES_LIST on, ``P_l = bilinear(
softmax_s(<F_l, t_s> / 0.07))`` at the input size (softmax on the patch grid, then resized,
``align_corners=False``). Image score ``softmax_s(<f, t_s> / 0.07)[abnormal]``; anomaly map
``sum_l (P_l[ab] + 1 - P_l[n]) / 2``, then a Gaussian of sigma 4 (``TEST.ANOMALY.MAP_SIGMA``).

Loss: ``CE(<f, t> / 0.07, y) + LAM * sum_l [focal(P_l, M) + Dice(P_l[ab], M) + Dice(P_l[n],
1 - M)]`` (Loss_ToolBox focal, gamma 2, smoothing 1e-5; Dice smooth 1; M = mask > 0.5). Adam lr
1e-3, betas (0.5, 0.999), batch 8, 15 epochs on the other dataset's test split; only the prompts
train (``prompt_learner/``: ``ctx_pos``, ``ctx_neg``, ``compound_prompts_text.<k>``).

Identical per-layer maps (``IDENTICAL_LAYER_MAPS``, default True = the upstream code that
trained the released weights and gave the published numbers): until 2025-04-13 upstream
appended the DPAM stream of each block of FEATURES_LIST without ``clone()`` and kept adding to
it in place, so all four maps (blocks 6 12 18 24) equal block 24's (upstream issues #18, #64).
False gives each block its own tokens (upstream's fix). Upstream's current scripts instead run
FEATURES_LIST (24,) with LAM 4: the same loss and gradients as the default (4 identical maps,
LAM 1), and the anomaly map divided by 4, which no metric sees.

Differences from upstream (same numerics): SDPA attention with both DPAM paths in one call,
the positional embedding interpolated (bilinear) per forward instead of written into the model,
batch-first tensors; upstream's unused ``compound_prompt_projections`` (never in the forward) and
its derived token buffers are not created or saved. Zero-shot only (upstream has no few-shot
mode). Released checkpoints are imported by ``tools/convert_anomalyclip.py``.
"""
from __future__ import annotations

import logging
from typing import Any, Dict

import torch
from yacs.config import CfgNode as CN

from dassl_lite.clip import tokenize
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.engine.anomaly import AnomalyTrainer
from dassl_lite.engine.anomaly_core import ReleasedWeightsError, load_released_weights
from dassl_lite.optim import build_lr_scheduler, build_optimizer
from dassl_lite.registry import TRAINER_REGISTRY

from .anomalyclip_model import (AnomalyCLIPModel, AnomalyCLIPPromptLearner, anomalyclip_loss,
                                state_prompt_texts)
from ..prompting import load_frozen_clip

logger = logging.getLogger(__name__)


@register_config_extender("AnomalyCLIP")
def add_anomalyclip_config(cfg: CN) -> None:
    """``TRAINER.ANOMALYCLIP`` with upstream's argument names and defaults (ViT-L/14@336px at
    518 px, the run that produced the released weights)."""
    cfg.TRAINER.ANOMALYCLIP = CN()
    c = cfg.TRAINER.ANOMALYCLIP
    c.N_CTX = 12  # --n_ctx: learned vectors of each state prompt
    c.DEPTH = 9  # --depth: deep text prompts enter text layers 1..DEPTH-1
    c.T_N_CTX = 4  # --t_n_ctx: length of each deep text prompt
    c.FEATURES_LIST = (6, 12, 18, 24)  # --features_list: 1-based ViT blocks
    c.FEATURE_MAP_LAYER = (0, 1, 2, 3)  # --feature_map_layer: maps from index [0] of the list on
    c.DPAM_LAYER = 20  # DPAM in the last DPAM_LAYER - 1 blocks (1: none)
    c.TEMPERATURE = 0.07  # hard-coded upstream (image and pixel logits)
    c.LAM = 1.0  # weight of the local (map) losses; 1 in the released run, 4 in upstream's
    # current train.py, which uses FEATURES_LIST (24,)
    c.IDENTICAL_LAYER_MAPS = True  # upstream's aliasing (#18/#64): every map is the last block's
    c.TEXT_PROMPT_FP16 = True  # deep text prompts rounded to fp16 (upstream's .half())
    c.PREC = "fp32"  # upstream runs the model in fp32


@TRAINER_REGISTRY.register()
class AnomalyCLIP(AnomalyTrainer):
    """AnomalyCLIP; config section ``TRAINER.ANOMALYCLIP``; checkpoints in ``prompt_learner/``."""

    precision_key = "TRAINER.ANOMALYCLIP.PREC"
    config_sections = ("ANOMALYCLIP",)
    model_name = "prompt_learner"
    # rows of tools/anomaly.py --table: (label, config file under configs/trainers/<T>/, shots)
    TABLE_ROWS = (("AnomalyCLIP", "toy", (0,)),)

    def check_cfg(self, cfg) -> None:
        c = cfg.TRAINER.ANOMALYCLIP
        if c.N_CTX < 1 or c.T_N_CTX < 1 or c.DEPTH < 1 or c.TEMPERATURE <= 0 or c.LAM < 0:
            raise ConfigError(f"TRAINER.ANOMALYCLIP needs N_CTX, T_N_CTX, DEPTH >= 1, "
                              f"TEMPERATURE > 0 and LAM >= 0; got {c.N_CTX}, {c.T_N_CTX}, "
                              f"{c.DEPTH}, {c.TEMPERATURE}, {c.LAM}")
        if not c.FEATURES_LIST or not c.FEATURE_MAP_LAYER or not (
                0 <= c.FEATURE_MAP_LAYER[0] < len(c.FEATURES_LIST)):
            raise ConfigError(f"TRAINER.ANOMALYCLIP.FEATURE_MAP_LAYER[0] must index "
                              f"FEATURES_LIST {list(c.FEATURES_LIST)} (0..."
                              f"{len(c.FEATURES_LIST) - 1}); got {list(c.FEATURE_MAP_LAYER)}")
        if cfg.DATASET.NUM_SHOTS > 0:
            raise ConfigError(f"AnomalyCLIP is zero-shot only (upstream has no few-shot mode); "
                              f"got DATASET.NUM_SHOTS {cfg.DATASET.NUM_SHOTS}, use 0")

    def build_model(self) -> None:
        cfg, c = self.cfg, self.cfg.TRAINER.ANOMALYCLIP
        clip_model = load_frozen_clip(cfg, self.precision.model_dtype, self.device,
                                      check_size=False)
        self.check_backbone(clip_model)
        clip_model.visual.pos_interpolation = "bilinear"  # upstream resizes it bilinearly
        learner = AnomalyCLIPPromptLearner(clip_model, c.N_CTX, c.DEPTH, c.T_N_CTX).float()
        self.model = AnomalyCLIPModel(
            clip_model, learner, c.FEATURES_LIST, c.FEATURE_MAP_LAYER[0], c.DPAM_LAYER,
            c.TEMPERATURE, c.IDENTICAL_LAYER_MAPS, c.TEXT_PROMPT_FP16).to(self.device)
        count = sum(p.numel() for p in learner.parameters())
        layers = clip_model.visual.layers
        dpam = f"blocks {layers - c.DPAM_LAYER + 2}..{layers}" if c.DPAM_LAYER > 1 else "none"
        logger.info(f"AnomalyCLIP: {count:,} trainable values (2 x {c.N_CTX} context vectors, "
                    f"{c.DEPTH - 1} deep prompts of {c.T_N_CTX}); blocks "
                    f"{list(c.FEATURES_LIST)}, DPAM {dpam}; identical layer maps "
                    f"{c.IDENTICAL_LAYER_MAPS} (upstream: True)")
        self.optim = build_optimizer(learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.model_name, learner, self.optim, self.sched)

    def check_backbone(self, clip_model) -> None:
        """A ViT whose blocks hold FEATURES_LIST and DPAM_LAYER, a text encoder deep enough."""
        c, name = self.cfg.TRAINER.ANOMALYCLIP, self.cfg.MODEL.BACKBONE.NAME
        visual = clip_model.visual
        if not hasattr(visual, "forward_features"):
            raise ConfigError(f"AnomalyCLIP needs a ViT backbone (patch tokens); {name!r} is "
                              f"not one")
        bad = [i for i in c.FEATURES_LIST if not 1 <= i <= visual.layers]
        if bad:
            raise ConfigError(f"TRAINER.ANOMALYCLIP.FEATURES_LIST {list(c.FEATURES_LIST)} has "
                              f"blocks {bad} that backbone {name!r} does not have: its vision "
                              f"encoder has blocks 1..{visual.layers} (1-based)")
        if not 1 <= c.DPAM_LAYER <= visual.layers + 1:
            raise ConfigError(f"TRAINER.ANOMALYCLIP.DPAM_LAYER {c.DPAM_LAYER}: DPAM runs in the "
                              f"last DPAM_LAYER - 1 blocks of {name!r}'s {visual.layers}; use "
                              f"1..{visual.layers + 1} (1: no DPAM)")
        text_layers = clip_model.transformer.layers
        if c.DEPTH > text_layers:
            raise ConfigError(f"TRAINER.ANOMALYCLIP.DEPTH {c.DEPTH}: the deep text prompts enter "
                              f"layers 1..DEPTH-1 of {name!r}'s {text_layers} text layers; use "
                              f"at most {text_layers} (upstream would leave the rest untrained)")

    # ------------------------------------------------------------------ train
    def forward_backward(self, batch: Dict[str, Any]) -> Dict[str, float]:
        images, masks, labels = self.parse_batch_anomaly(batch)
        with self.precision.autocast():
            out = self.model(images)
        terms = anomalyclip_loss(out, labels, masks, self.cfg.TRAINER.ANOMALYCLIP.LAM)
        self.model_backward_and_update(terms["loss"])
        return {k: v.item() for k, v in terms.items()}

    # ------------------------------------------------------------------ evaluation
    def before_test(self) -> None:
        """The two state features, once per evaluation (as upstream's test.py)."""
        self.unwrapped_model.cache_text()

    def after_test(self) -> None:
        self.unwrapped_model.clear_text_cache()

    @torch.no_grad()
    def model_inference(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = self.model(images)
        return {"image_score": out["image_score"], "anomaly_map": out["anomaly_map"]}


# upstream AnomalyCLIP_PromptLearner state-dict entries that are not trained weights here:
# derived token buffers and the compound_prompt_projections, which its forward never uses
_IGNORED = ("token_prefix_pos", "token_suffix_pos", "token_prefix_neg", "token_suffix_neg",
            "compound_prompt_projections.")
_LAYOUT = ("{'prompt_learner': state_dict} with ctx_pos / ctx_neg [1, 1, N_CTX, width] and "
           "compound_prompts_text.0..DEPTH-2 [T_N_CTX, width]")


def convert_upstream(path: str, n_ctx: int, depth: int, t_n_ctx: int) -> Dict[str, torch.Tensor]:
    """Upstream's ``epoch_<n>.pth`` (read with ``weights_only=True``) -> the trainable state of
    :class:`AnomalyCLIPPromptLearner`, checked against ``--n_ctx / --depth / --t_n_ctx``."""
    obj = load_released_weights(path, "checkpoint", "AnomalyCLIP")
    state = obj.get("prompt_learner") if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ReleasedWeightsError(f"{path!r}: expected AnomalyCLIP's checkpoint {_LAYOUT}; got "
                                   f"{got}")
    wanted = ["ctx_pos", "ctx_neg", *[f"compound_prompts_text.{k}" for k in range(depth - 1)]]
    missing = [k for k in wanted if k not in state]
    extra = [k for k in state if k not in wanted and not k.startswith(_IGNORED)
             and k not in ("tokenized_prompts_pos", "tokenized_prompts_neg")]
    if missing or extra:
        raise ReleasedWeightsError(f"{path!r}: prompt_learner keys missing {missing}, unexpected "
                                   f"{extra} for DEPTH {depth}; expected {_LAYOUT}")
    width = state["ctx_pos"].shape[-1]
    expected = {"ctx_pos": (1, 1, n_ctx, width), "ctx_neg": (1, 1, n_ctx, width),
                **{k: (t_n_ctx, width) for k in wanted[2:]}}
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise ReleasedWeightsError(f"{path!r}: prompt_learner.{key} has shape "
                                       f"{list(state[key].shape)}; expected {list(shape)} "
                                       f"(N_CTX {n_ctx}, T_N_CTX {t_n_ctx})")
    tokens = tokenize(state_prompt_texts(n_ctx))
    for i, key in enumerate(("tokenized_prompts_pos", "tokenized_prompts_neg")):
        if key in state and not torch.equal(state[key].reshape(-1).long(), tokens[i].long()):
            raise ReleasedWeightsError(f"{path!r}: prompt_learner.{key} is not the tokenised "
                                       f"{state_prompt_texts(n_ctx)[i]!r} of N_CTX {n_ctx}")
    return {k: state[k].detach().float().clone() for k in wanted}
