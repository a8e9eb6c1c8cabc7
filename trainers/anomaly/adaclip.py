"""AdaCLIP (Cao, Zhu, Hu, Li, Ma, Shen; ECCV 2024; reference code caoyunkang/AdaCLIP ``train.py``,
``method/trainer.py``, ``method/adaclip.py``, ``loss.py``): zero-shot anomaly detection with
hybrid static + image-conditioned (dynamic) learnable prompts in both CLIP encoders, per-layer
patch projections and HSF (hybrid semantic fusion) for the image score. The model lives in
:mod:`trainers.anomaly.adaclip_model`.

Recipe as released (``train.py`` defaults, ``train.sh``): OpenCLIP ViT-L-14-336 (OpenAI weights)
at 518 px, blocks 6 12 18 24, PROMPTING_DEPTH 4, PROMPTING_LENGTH 5, PROMPTING_TYPE "SD",
PROMPTING_BRANCH "VL", HSF with K_CLUSTERS 20; AdamW lr 0.01 betas (0.5, 0.999) (torch's default
weight decay 0.01), batch 1 (upstream refuses other sizes), 5 epochs, seed 111, under CUDA
autocast fp16; each epoch is validated and the best pixel F1 kept. Training data: the TEST
splits of MVTec AD + ColonDB (evaluated on VisA and the others), or VisA + ClinicDB (evaluated on
MVTec AD and ColonDB): ``DATASET.NAME`` is the first, ``TRAINER.ADACLIP.AUX_DATASETS`` names the
auxiliary ones; the medical auxiliary sets are not available in dassl_lite, and naming them is an
error that says so. Evaluation: Gaussian sigma 4 on the map (``TEST.ANOMALY.MAP_SIGMA 4``).

Loss (``adaclip_model.adaclip_loss``): focal on the image probabilities + per layer focal + Dice
(abnormal) + Dice (normal) on the maps, with the shared ``focal_loss_softmax`` / ``binary_dice_loss``.
Checkpoints hold only :class:`AdaCLIPLearner` (folder ``AdaCLIP/``); released files are imported
by ``tools/convert_adaclip.py`` (:func:`convert_upstream`).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Sequence

import torch
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.clip import use_exact_gelu
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.engine.anomaly import AnomalyTrainer
from dassl_lite.engine.anomaly_core import ReleasedWeightsError, load_released_weights
from dassl_lite.optim import build_lr_scheduler, build_optimizer
from dassl_lite.registry import DATASET_REGISTRY, TRAINER_REGISTRY

from ..prompting import load_dense_vit
from .adaclip_model import AdaCLIPLearner, AdaCLIPModel, adaclip_loss, default_features

logger = logging.getLogger(__name__)

# upstream dataset names (dataset/__init__.py) -> dassl_lite dataset names, where one exists
UPSTREAM_DATASETS = {"mvtec": "MVTecAD", "visa": "VisA"}
UPSTREAM_ONLY = ("br35h", "brain_mri", "btad", "clinicdb", "colondb", "dagm", "dtd", "headct",
                 "isic", "mpdd", "sdd", "tn3k")


@register_config_extender("ADACLIP")
def add_adaclip_config(cfg: CN) -> None:
    """``TRAINER.ADACLIP`` with upstream's argument names and ``train.py`` defaults."""
    cfg.TRAINER.ADACLIP = CN()
    c = cfg.TRAINER.ADACLIP
    c.PROMPTING_DEPTH = 4  # --prompting_depth: layers that get (new) prompts
    c.PROMPTING_LENGTH = 5  # --prompting_length: prompt tokens per layer
    c.PROMPTING_TYPE = "SD"  # --prompting_type: S static, D dynamic, SD both
    c.PROMPTING_BRANCH = "VL"  # --prompting_branch: V visual, L language, VL both
    c.USE_HSF = True  # --use_hsf
    c.K_CLUSTERS = 20  # --k_clusters
    c.FEATURES_LIST = ()  # 1-based blocks; () = upstream's n // 4 * (1, 2, 3, 4)
    c.AUX_DATASETS = ()  # upstream --training_data after the first: ("colondb",) / ("clinicdb",)
    c.PREC = "fp32"  # upstream: CUDA autocast fp16 (use "amp" on GPU)
    # MLP activation of both encoders: "upstream" = exact nn.GELU, as upstream's create_model
    # builds CLIP(**ViT-L-14-336.json) (no quick_gelu) and loads the OpenAI weights into it;
    # "backbone" = the backbone's own (QuickGELU for OpenAI weights and ToyCLIP)
    c.GELU = "upstream"


@TRAINER_REGISTRY.register()
class AdaCLIP(AnomalyTrainer):
    """AdaCLIP; config section ``TRAINER.ADACLIP``; checkpoints in ``AdaCLIP/``."""

    precision_key = "TRAINER.ADACLIP.PREC"
    config_sections = ("ADACLIP",)
    model_name = "AdaCLIP"
    # rows of tools/anomaly.py --table: (label, config file under configs/trainers/<T>/, shots)
    TABLE_ROWS = (("AdaCLIP", "toy", (0,)),)

    def check_cfg(self, cfg) -> None:
        c = cfg.TRAINER.ADACLIP
        if c.PROMPTING_BRANCH not in ("", "V", "L", "VL"):
            raise ConfigError(f"TRAINER.ADACLIP.PROMPTING_BRANCH {c.PROMPTING_BRANCH!r}: expected "
                              f"one of '', 'V', 'L', 'VL'")
        if c.PROMPTING_TYPE not in ("", "S", "D", "SD"):
            raise ConfigError(f"TRAINER.ADACLIP.PROMPTING_TYPE {c.PROMPTING_TYPE!r}: expected "
                              f"one of '', 'S', 'D', 'SD'")
        if c.PROMPTING_BRANCH and not c.PROMPTING_TYPE:
            raise ConfigError(f"TRAINER.ADACLIP.PROMPTING_BRANCH {c.PROMPTING_BRANCH!r} needs a "
                              f"PROMPTING_TYPE ('S', 'D' or 'SD'); got ''")
        for key in ("PROMPTING_DEPTH", "PROMPTING_LENGTH", "K_CLUSTERS"):
            if c[key] < 1:
                raise ConfigError(f"TRAINER.ADACLIP.{key} must be >= 1; got {c[key]}")
        if cfg.DATASET.NUM_SHOTS > 0:
            raise ConfigError(f"AdaCLIP is zero-shot only (upstream has no few-shot mode); got "
                              f"DATASET.NUM_SHOTS {cfg.DATASET.NUM_SHOTS}")

    def before_train(self) -> None:
        """Training reads ``AUX_DATASETS`` (evaluating a converted release does not)."""
        self._check_aux(self.cfg)
        super().before_train()

    @staticmethod
    def _check_aux(cfg) -> None:
        aux = [str(a) for a in cfg.TRAINER.ADACLIP.AUX_DATASETS]
        if not aux:
            return
        missing = [a for a in aux if a.lower() in UPSTREAM_ONLY
                   or (a not in DATASET_REGISTRY and a.lower() not in UPSTREAM_DATASETS)]
        if missing:
            raise ConfigError(
                f"TRAINER.ADACLIP.AUX_DATASETS {aux}: {missing} not available in dassl_lite "
                f"(upstream's recipe trains on MVTec AD + ColonDB, or VisA + ClinicDB; dassl_lite "
                f"has no loaders for the medical sets). Set TRAINER.ADACLIP.AUX_DATASETS () to "
                f"train on DATASET.NAME {cfg.DATASET.NAME!r} only")
        raise ConfigError(f"TRAINER.ADACLIP.AUX_DATASETS {aux}: training on several datasets "
                          f"at once is not implemented; set it to () to train on DATASET.NAME "
                          f"{cfg.DATASET.NAME!r} only")

    def build_model(self) -> None:
        cfg, c = self.cfg, self.cfg.TRAINER.ADACLIP
        if c.GELU not in ("upstream", "backbone"):
            raise ConfigError(f"TRAINER.ADACLIP.GELU must be 'upstream' or 'backbone'; "
                              f"got {c.GELU!r}")
        self.clip = load_dense_vit(cfg, self.precision.model_dtype, self.device, "AdaCLIP")
        if c.GELU == "upstream":
            use_exact_gelu(self.clip)
            logger.info("AdaCLIP: exact GELU in both encoders (upstream builds open_clip's "
                        "config without quick_gelu; TRAINER.ADACLIP.GELU)")
        visual = self.clip.visual  # positional embedding resized bicubic (resize_pos_embed)
        layers = tuple(c.FEATURES_LIST) or default_features(visual.layers)
        bad = [i for i in layers if not 1 <= i <= visual.layers]
        if bad:
            raise ConfigError(f"TRAINER.ADACLIP.FEATURES_LIST {list(layers)} has blocks {bad} that "
                              f"backbone {cfg.MODEL.BACKBONE.NAME!r} does not have: its vision "
                              f"encoder has blocks 1..{visual.layers} (1-based)")
        if c.PROMPTING_DEPTH > min(visual.layers, self.clip.transformer.layers):
            raise ConfigError(f"TRAINER.ADACLIP.PROMPTING_DEPTH {c.PROMPTING_DEPTH} exceeds the "
                              f"{visual.layers} vision / {self.clip.transformer.layers} text "
                              f"blocks of {cfg.MODEL.BACKBONE.NAME!r}")
        learner = AdaCLIPLearner(visual.width, self.clip.transformer.width, visual.proj.shape[1],
                                 len(layers), c.PROMPTING_LENGTH, c.PROMPTING_DEPTH,
                                 c.PROMPTING_BRANCH, c.PROMPTING_TYPE).float()
        self.model = AdaCLIPModel(self.clip, learner, layers, c.USE_HSF,
                                  c.K_CLUSTERS).to(self.device)
        logger.info(f"AdaCLIP: {sum(p.numel() for p in learner.parameters() if p.requires_grad):,} trainable values, "
                    f"blocks {list(layers)}, prompts {c.PROMPTING_BRANCH or '-'}/"
                    f"{c.PROMPTING_TYPE or '-'} depth {c.PROMPTING_DEPTH} length "
                    f"{c.PROMPTING_LENGTH}, HSF {'K=%d' % c.K_CLUSTERS if c.USE_HSF else 'off'}")
        self.optim = build_optimizer(learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.model_name, learner, self.optim, self.sched)

    def forward_backward(self, batch: Dict[str, Any]) -> Dict[str, float]:
        images, masks, labels = self.parse_batch_anomaly(batch)
        with self.precision.autocast():
            maps, score = self.model(images, list(batch["category"]), aggregation=False)
        terms = adaclip_loss([m.float() for m in maps], score.float(), masks, labels)
        self.model_backward_and_update(terms["loss"])
        return {k: v.item() for k, v in terms.items()}

    @torch.no_grad()
    def model_inference(self, images: Tensor) -> Dict[str, Tensor]:
        amap, score = self.model(images, self.batch_categories, aggregation=True)
        return {"image_score": score.float(), "anomaly_map": amap.float()}


def upstream_key_names(learner_keys: Sequence[str]) -> Dict[str, str]:
    """{upstream key: dassl_lite key}: upstream saves ``AdaCLIP_Trainer.state_dict()`` entries,
    i.e. the learner's names under ``clip_model.``."""
    return {f"clip_model.{k}": k for k in learner_keys}


def convert_upstream(path: str, expected: Dict[str, torch.Size]) -> Dict[str, Tensor]:
    """Upstream's ``<name>_best.pth`` (a flat dict ``clip_model.<piece>...`` -> tensor, read with
    ``weights_only=True``) -> an :class:`AdaCLIPLearner` state dict, checked key by key and
    shape by shape against ``expected`` (the learner's own ``{name: shape}``)."""
    obj = load_released_weights(path, "weights", "AdaCLIP")
    names = upstream_key_names(list(expected))
    if not isinstance(obj, dict):
        raise ReleasedWeightsError(f"{path!r}: expected AdaCLIP's flat state dict "
                                   f"(clip_model.<piece> -> tensor); got {type(obj).__name__}")
    missing = sorted(set(names) - set(obj))
    extra = sorted(set(obj) - set(names))
    if missing or extra:
        raise ReleasedWeightsError(
            f"{path!r}: keys differ from AdaCLIP's layout for this config (PROMPTING_DEPTH / "
            f"LENGTH / TYPE / BRANCH, FEATURES_LIST): missing {missing[:6]}"
            f"{' ...' if len(missing) > 6 else ''}, unexpected {extra[:6]}"
            f"{' ...' if len(extra) > 6 else ''}; expected e.g. {sorted(names)[:4]}")
    out = {}
    for up, ours in names.items():
        value = obj[up]
        if not isinstance(value, Tensor) or value.shape != expected[ours]:
            got = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ReleasedWeightsError(f"{path!r}: {up} has shape {got}; this config expects "
                                       f"{list(expected[ours])} (check the backbone)")
        out[ours] = value.detach().float().clone()
    return out
