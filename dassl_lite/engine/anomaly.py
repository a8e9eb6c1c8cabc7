"""AnomalyTrainer: the trainer template for anomaly detection (same loop, other data and
evaluator).

A method writes ``build_model``, ``forward_backward`` and ``model_inference``, which returns
``{"image_score": [B], "anomaly_map": [B, h, w]}`` (any map resolution; the
``AnomalyDetection`` evaluator resizes it to the mask and smooths it). Train and test batches
are dicts with ``img`` [B, 3, H, W], ``mask`` [B, 1, H, W] (0/1, aligned with ``img``),
``label`` [B] (0 normal, 1 anomalous), ``category``, ``defect`` and ``impath`` lists.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, List, Mapping, Tuple

import torch

from ..config import ConfigError
from ..errors import DasslLiteError
from ..evaluation import ANOMALY_METRIC_KEYS, AnomalyDetection, build_evaluator
from ..evaluation.anomaly_threshold import threshold_setting
from ..utils.distributed import sampler_seed
from ..utils.io import atomic_write_json
from .trainer import TrainerX, TrainingFree

logger = logging.getLogger(__name__)

__all__ = ["AnomalyTrainer", "TrainingFreeAnomalyTrainer"]


class AnomalyTrainer(TrainerX):
    """TrainerX for the anomaly task family (``task = "anomaly"``).

    ``test()`` is the template's; per batch :meth:`evaluate_batch` hands the model's output
    dict and the batch to the evaluator. ``results.json`` holds the macro means
    (``image_auroc`` ... ``pixel_aupro``, percent; null where undefined), ``per_category`` and
    ``undefined`` ({category: {metric: why}}).
    """

    task = "anomaly"

    def mosaic_rate(self) -> float:
        """Probability that a training item is a 2x2 mosaic of its category (the data layer's
        :meth:`AnomalyDatasetWrapper.enable_mosaic`); 0 here, a method's augmentation setting
        where it has one (APRIL-GAN: ``TRAINER.APRILGAN.AUG_RATE``)."""
        return 0.0

    mosaic_key = "mosaic rate"  # the config key of :meth:`mosaic_rate`, named in errors

    def build_data_loader(self) -> None:
        """The template's loaders; the training loader makes mosaics at :meth:`mosaic_rate`,
        seeded with ``SEED`` (torch's initial seed when ``SEED`` < 0)."""
        super().build_data_loader()
        rate = self.mosaic_rate()
        if rate:
            self.train_loader_x.dataset.enable_mosaic(rate, sampler_seed(self.cfg.SEED),
                                                      self.mosaic_key)
            logger.info("Mosaic augmentation: %s %g (2x2 mosaics of a category's training "
                        "records)", self.mosaic_key, rate)

    def run_epoch(self) -> None:
        """The template's epoch; the training data first learns the epoch (its mosaic draws)."""
        if self.mosaic_rate():
            self.train_loader_x.dataset.set_epoch(self.epoch)
        super().run_epoch()

    def build_evaluator(self):
        """``TEST.EVALUATOR`` (must be ``AnomalyDetection`` or a subclass) with the categories."""
        evaluator = build_evaluator(self.cfg, categories=self.dm.dataset.categories)
        if not isinstance(evaluator, AnomalyDetection):
            raise DasslLiteError(
                f"{type(self).__name__} needs TEST.EVALUATOR AnomalyDetection (image score + "
                f"anomaly map per image); got {self.cfg.TEST.EVALUATOR!r}")
        return evaluator

    def parse_batch_anomaly(self, batch: Mapping[str, Any]) -> Tuple[torch.Tensor, ...]:
        """(images, masks [B, 1, H, W], labels [B]) on the trainer's device."""
        return (batch["img"].to(self.device), batch["mask"].to(self.device),
                batch["label"].to(self.device))

    parse_batch_train = parse_batch_anomaly

    @torch.no_grad()
    def reference_images(self, category: str) -> torch.Tensor:
        """[k, 3, H, W] on the device: the few-shot references of ``category`` (its training
        records, drawn by the dataset with the run's seed) through the test transform."""
        dataset = self.dm.dataset
        refs = dataset.references(category)
        if not refs:
            raise ConfigError(f"few-shot {type(self).__name__}: category {category!r} has no "
                              f"normal train image to use as a reference")
        wrapper = dataset.dataset_wrapper(self.cfg, refs, transform=self.dm.tfm_test)
        return torch.stack([wrapper[i]["img"] for i in range(len(refs))]).to(self.device)

    def model_inference(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{"image_score": [B], "anomaly_map": [B, h, w]}``; every method overrides this.
        Methods whose prompts name the object read ``self.batch_categories``."""
        raise NotImplementedError(f"{type(self).__name__} must implement model_inference()")

    def evaluate_batch(self, batch: Dict[str, Any], shards) -> None:
        """Inference on one test batch (``self.batch_categories`` holds each image's category
        while ``model_inference`` runs), then the evaluator (one process: see
        :meth:`ShardedEvaluation.count_unsharded`)."""
        images = batch["img"].to(self.device)
        self.batch_categories: List[str] = list(batch["category"])
        with self.precision.autocast():
            output = self.model_inference(images)
        self.evaluator.process({k: v.float() for k, v in output.items()}, batch)
        shards.count_unsharded(images.shape[0])

    def write_results(self, split: str, results: Dict[str, Any], num_samples: int) -> None:
        """``OUTPUT_DIR/results.json``: metrics (percent), per_category and the run's setup."""
        cfg = self.cfg
        record: Dict[str, Any] = {"split": split}
        record.update({k: results[k] for k in ANOMALY_METRIC_KEYS})
        record.update({
            "per_category": results["per_category"],
            "undefined": results.get("undefined", {}),
            "threshold": results.get("threshold"),
            "threshold_setting": threshold_setting(cfg),
            "aupro_mode": results["aupro_mode"],
            "map_sigma": cfg.TEST.ANOMALY.MAP_SIGMA,
            "num_samples": num_samples,
            "trainer": cfg.TRAINER.NAME,
            "dataset": cfg.DATASET.NAME,
            "train_split": cfg.DATASET.ANOMALY.TRAIN_SPLIT,
            "num_shots": cfg.DATASET.NUM_SHOTS,
            "seed": cfg.SEED,
            "epoch": self.model_epoch,
            "backbone": cfg.MODEL.BACKBONE.NAME,
            "input_size": list(cfg.INPUT.SIZE),
            "precision": self.precision.name,
            "wall_time_s": round(time.time() - self.time_created, 2),
        })
        atomic_write_json(os.path.join(self.output_dir, "results.json"), record)


class TrainingFreeAnomalyTrainer(TrainingFree, AnomalyTrainer):
    """An anomaly method without learned weights (ZeroshotAD, WinCLIP): ``train()`` evaluates,
    ``load_model()`` loads nothing, ``forward_backward()`` is never called."""

    def forward_backward(self, batch):
        raise RuntimeError(f"{type(self).__name__} is training-free; forward_backward() is "
                           f"never called")
