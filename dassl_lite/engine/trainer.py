"""SimpleTrainer (config-driven data, evaluation, loop) and TrainerX (one labelled loader)."""
from __future__ import annotations

import datetime
import logging
import os
import sys
import time
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from ..config import ConfigError
from ..data import DataManager
from ..errors import DasslLiteError
from ..evaluation import build_evaluator
from ..optim import warmup_only_warning
from ..utils.io import atomic_write_json
from ..utils.meters import AverageMeter, MetricMeter, RecentRate
from .base import TrainerBase
from .distributed import (ShardedEvaluation, agree_on_seed, barrier, get_world_size,
                          init_distributed, is_distributed, is_main_process, main_process_first,
                          set_sampler_epoch, unwrap, wrap_ddp)
from .interrupt import check_interrupt
from .precision import Precision, resolve_precision

logger = logging.getLogger(__name__)


def _cfg_value(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


class SimpleTrainer(TrainerBase):
    """A trainer built from a config: data, model, evaluator, loop, evaluation, results.

    Subclasses set ``precision_key`` (e.g. ``"TRAINER.COOP.PREC"``) and override
    ``build_model`` and ``forward_backward``.
    """

    precision_key: Optional[str] = None  # dotted config key holding PREC; None -> fp32
    # The TRAINER.<X> sections this trainer reads (an option the user sets in any other one draws
    # a warning naming these; dassl_lite/config/sections.py). None: the section of precision_key.
    config_sections: Optional[Tuple[str, ...]] = None
    compiled = False  # set by a build_model that honours MODEL.COMPILE (ClipPromptTrainer's)

    def __init__(self, cfg) -> None:
        super().__init__()
        self.time_created = time.time()
        self.check_cfg(cfg)
        self.cfg = cfg
        self.device = init_distributed(cfg.USE_CUDA) or self.select_device(cfg)
        agree_on_seed(cfg.SEED)  # DDP with SEED < 0: one seed for every process
        self.precision: Precision = resolve_precision(
            _cfg_value(cfg, self.precision_key) if self.precision_key else "fp32",
            self.device, self.precision_key or "PREC",
        )
        self.scaler = self.precision.make_grad_scaler()
        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.best_result = -float("inf")
        self.step_rate = RecentRate()  # the ETA follows the recent batches' speed
        self.build_data_loader()
        self.build_model()
        if cfg.MODEL.COMPILE and not self.compiled:
            raise ConfigError(f"MODEL.COMPILE True is not supported by {type(self).__name__}: its "
                              f"build_model compiles nothing (the CLIP prompt trainers built by "
                              f"ClipPromptTrainer.build_model do); set MODEL.COMPILE False")
        self.maybe_data_parallel()
        self.evaluator = self.build_evaluator()

    # ------------------------------------------------------------------ builders
    def check_cfg(self, cfg) -> None:
        """Override to validate the trainer's config section before anything is built."""

    @staticmethod
    def select_device(cfg) -> torch.device:
        """CUDA when available and ``USE_CUDA``; otherwise CPU."""
        if cfg.USE_CUDA and torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")

    def build_data_loader(self) -> None:
        """Build the DataManager; override to pass custom transforms or a dataset wrapper."""
        with main_process_first():  # rank 0 may generate or download the dataset
            dm = DataManager(self.cfg)
        self.check_task(dm.dataset)
        self.dm = dm
        self.train_loader_x = dm.train_loader_x
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.lab2cname = dm.lab2cname

    def check_task(self, dataset) -> None:
        """Raise DasslLiteError unless ``dataset`` is of this trainer's task family."""
        task = getattr(dataset, "task", "classification")
        if task != self.task:
            raise DasslLiteError(
                f"{type(self).__name__} is a {self.task} trainer but dataset "
                f"{self.cfg.DATASET.NAME!r} is a {task} dataset; pick a {self.task} dataset or "
                f"a {task} trainer"
            )

    def build_model(self) -> None:
        """Set ``self.model`` and call ``register_model``; every method overrides this."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_model()")

    def maybe_data_parallel(self) -> None:
        """Wrap ``self.model`` in DistributedDataParallel under torchrun, else in DataParallel
        when several GPUs are visible and allowed."""
        if is_distributed():
            batch = self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE
            logger.info(f"DistributedDataParallel over {get_world_size()} processes: effective "
                        f"batch {get_world_size()} x {batch} = {get_world_size() * batch}")
            self.model = wrap_ddp(self.model, self.device)
            return
        n_gpu = torch.cuda.device_count() if self.device.type == "cuda" else 0
        if n_gpu > 1 and self.cfg.TRAIN.DATA_PARALLEL and isinstance(self.model, nn.Module):
            logger.info(f"Detected {n_gpu} GPUs: using DataParallel (TRAIN.DATA_PARALLEL False disables)")
            self.model = nn.DataParallel(self.model)

    @property
    def unwrapped_model(self) -> nn.Module:
        return unwrap(self.model)

    def build_evaluator(self):
        """The evaluator named by ``TEST.EVALUATOR``."""
        return build_evaluator(self.cfg, lab2cname=self.lab2cname)

    # ------------------------------------------------------------------ loop
    def train(self) -> None:  # type: ignore[override]
        super().train(self.start_epoch, self.max_epoch)

    def before_train(self) -> None:
        if self.cfg.TEST.FINAL_MODEL == "best_val" and self.val_loader is None:
            raise DasslLiteError(
                f"TEST.FINAL_MODEL best_val selects the model on the val split, but dataset "
                f"{self.cfg.DATASET.NAME!r} has none; use TEST.FINAL_MODEL last_step"
            )
        directory = self.cfg.RESUME or self.output_dir
        self.start_epoch = self.resume_model_if_exist(directory)
        self.warn_if_warmup_only()
        if is_main_process():
            self.write_classnames()
            self.init_writer(os.path.join(self.output_dir, "tensorboard"))
        self.time_start = time.time()

    def global_step(self) -> int:
        """Training iterations the current weights have seen: TensorBoard's step axis for
        training (per batch) and test results (after an epoch) alike."""
        loader = getattr(self, "train_loader_x", None)
        return (self.model_epoch or 0) * (len(loader) if loader is not None else 0)

    def warn_if_warmup_only(self) -> None:
        """Warn (once, at the start) when every epoch is a warm-up epoch of a scheduler."""
        warning = warmup_only_warning(self.cfg.OPTIM)
        scheduled = any(s is not None for s in self._scheds.values())
        if warning and scheduled and self.start_epoch < self.max_epoch:
            logger.warning(warning)

    def write_classnames(self) -> None:
        """Record the class names in label order (``OUTPUT_DIR/classnames.json``), so a
        prediction with the run's weights names its classes as training saw them."""
        if self.task == "classification":
            atomic_write_json(os.path.join(self.output_dir, "classnames.json"),
                              list(self.dm.classnames))

    def after_epoch(self) -> None:
        last_epoch = (self.epoch + 1) == self.max_epoch
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        meet_freq = freq > 0 and (self.epoch + 1) % freq == 0
        if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
            result = self.test(split="val")
            if result > self.best_result:
                self.best_result = result
                self.save_model(self.epoch, self.output_dir, val_result=result,
                                model_name="model-best.pth.tar")
        if meet_freq or last_epoch:
            self.save_model(self.epoch, self.output_dir)

    def after_train(self) -> None:
        try:
            if not self.completed:
                return
            logger.info("Finish training")
            if not self.cfg.TEST.NO_TEST:
                if self.cfg.TEST.FINAL_MODEL == "best_val":
                    logger.info("Deploy the model with the best val performance")
                    self.load_model(self.output_dir)
                else:
                    logger.info("Deploy the last-epoch model")
                self.test()
            elapsed = datetime.timedelta(seconds=round(time.time() - self.time_start))
            logger.info(f"Elapsed: {elapsed}")
        finally:
            self.close_writer()

    # ------------------------------------------------------------------ evaluation
    def parse_batch_test(self, batch: Dict[str, Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def model_inference(self, input: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images; override when inference differs from ``self.model``."""
        return self.model(input)

    def before_test(self) -> None:
        """Called before an evaluation loop (e.g. to compute text features once)."""

    def after_test(self) -> None:
        """Called after an evaluation loop, also when it failed (e.g. to drop caches)."""

    def _eval_loader(self, split: str):
        if split == "val":
            if self.val_loader is None:
                raise DasslLiteError(
                    f"Evaluation on the val split was asked for, but dataset "
                    f"{self.cfg.DATASET.NAME!r} has no val split; use TEST.SPLIT test"
                )
            return self.val_loader
        if split == "test":
            return self.test_loader
        raise DasslLiteError(f"split must be 'val' or 'test'; got {split!r}")

    def evaluate_batch(self, batch: Dict[str, Any], shards: ShardedEvaluation) -> None:
        """Run inference on one test batch and feed the evaluator through ``shards`` (which
        gathers the ranks' outputs under DDP). Override when a task's evaluator takes other
        inputs (anomaly detection)."""
        images, labels = self.parse_batch_test(batch)
        with self.precision.autocast():
            output = self.model_inference(images)
        shards.process(output.float(), labels, batch)

    @torch.no_grad()
    def test(self, split: Optional[str] = None) -> float:
        """Evaluate on ``split`` (default ``TEST.SPLIT``); logs upstream's result lines and
        writes ``OUTPUT_DIR/results.json``. Returns the first metric (accuracy)."""
        split = split or self.cfg.TEST.SPLIT
        loader = self._eval_loader(split)
        self.set_model_mode("eval")
        self.evaluator.reset()
        logger.info(f"Evaluate on the *{split}* set")
        shards = ShardedEvaluation(self.evaluator, len(loader.dataset))
        self.before_test()
        try:
            from tqdm import tqdm

            quiet = not (sys.stderr.isatty() and is_main_process())
            for batch in tqdm(loader, disable=quiet, leave=False):
                self.evaluate_batch(batch, shards)
        finally:
            self.after_test()
        num_samples = shards.finish()
        results = self.evaluator.evaluate()
        self.write_test_scalars(split, results)
        self.write_results(split, results, num_samples)
        return list(results.values())[0]

    def save_model(self, *args, **kwargs) -> None:
        """Checkpoints are written by rank 0; the other ranks wait for them."""
        if is_main_process():
            super().save_model(*args, **kwargs)
        barrier()

    def write_test_scalars(self, split: str, results: Dict[str, Any]) -> None:
        """Numeric results to TensorBoard as ``<split>/<metric>``; an evaluation-only run (no
        writer open) writes them to ``OUTPUT_DIR/tensorboard`` too (rank 0 only)."""
        if not is_main_process():
            return
        scalars = {k: v for k, v in results.items() if isinstance(v, (int, float))}
        owns_writer = self._writer is None
        if owns_writer:
            self.init_writer(os.path.join(self.output_dir, "tensorboard"))
        try:
            for k, v in scalars.items():
                self.write_scalar(f"{split}/{k}", v, self.global_step())
        finally:
            if owns_writer:
                self.close_writer()

    def write_results(self, split: str, results: Dict[str, Any], num_samples: int) -> None:
        """Write ``OUTPUT_DIR/results.json`` (machine-readable twin of the log lines; rank 0)."""
        if not is_main_process():
            return
        cfg = self.cfg
        record = {
            "split": split,
            "accuracy": results.get("accuracy"),
            "error": results.get("error"),
            "macro_f1": results.get("macro_f1"),
            "num_samples": num_samples,
            "trainer": cfg.TRAINER.NAME,
            "dataset": cfg.DATASET.NAME,
            "subsample": cfg.DATASET.SUBSAMPLE_CLASSES,
            "num_shots": cfg.DATASET.NUM_SHOTS,
            "seed": cfg.SEED,
            "epoch": self.model_epoch,
            "backbone": cfg.MODEL.BACKBONE.NAME,
            "precision": self.precision.name,
            # seconds since the trainer was built (data, model, training and this evaluation)
            "wall_time_s": round(time.time() - self.time_created, 2),
        }
        if "perclass_accuracy" in results:
            record["perclass_accuracy"] = results["perclass_accuracy"]
        atomic_write_json(os.path.join(self.output_dir, "results.json"), record)


class TrainerX(SimpleTrainer):
    """A trainer with one labelled training loader (``train_loader_x``)."""

    clock = staticmethod(time.perf_counter)  # batch timing (a test may substitute a fake clock)

    def parse_batch_train(self, batch: Dict[str, Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def run_epoch(self) -> None:
        self.set_model_mode("train")
        losses, batch_time, data_time = MetricMeter(), AverageMeter(), AverageMeter()
        self.num_batches = len(self.train_loader_x)
        set_sampler_epoch(self.train_loader_x, self.epoch)
        end = self.clock()
        for self.batch_idx, batch in enumerate(self.train_loader_x):
            data_time.update(self.clock() - end)
            losses.update(self.forward_backward(batch))
            batch_time.update(self.clock() - end)
            self.step_rate.update(batch_time.val)
            self.log_iteration(losses, batch_time, data_time)
            check_interrupt()  # a safe point: after a whole step
            end = self.clock()

    def log_iteration(self, losses: MetricMeter, batch_time: AverageMeter,
                      data_time: AverageMeter) -> None:
        """Dassl's per-iteration line every ``TRAIN.PRINT_FREQ`` batches, plus TensorBoard."""
        freq = self.cfg.TRAIN.PRINT_FREQ
        meet_freq = (self.batch_idx + 1) % freq == 0 if freq > 0 else False
        if meet_freq or self.num_batches < freq:
            remaining = self.num_batches - self.batch_idx - 1
            remaining += (self.max_epoch - self.epoch - 1) * self.num_batches
            eta = datetime.timedelta(seconds=int(self.step_rate.eta(remaining)))
            logger.info(
                f"epoch [{self.epoch + 1}/{self.max_epoch}] "
                f"batch [{self.batch_idx + 1}/{self.num_batches}] "
                f"time {batch_time.val:.3f} ({batch_time.avg:.3f}) "
                f"data {data_time.val:.3f} ({data_time.avg:.3f}) "
                f"{losses} lr {self.get_current_lr():.4e} eta {eta}"
            )
        n_iter = self.epoch * self.num_batches + self.batch_idx
        for name, meter in losses.meters.items():
            self.write_scalar("train/" + name, meter.avg, n_iter)
        self.write_scalar("train/lr", self.get_current_lr(), n_iter)


class TrainingFree:
    """Mixin for trainers without learned weights (zero-shot CLIP, training-free anomaly
    methods); put it before the trainer class: ``train()`` evaluates (unless
    ``TEST.NO_TEST``), ``load_model()`` loads nothing."""

    def train(self) -> None:
        """Nothing to train: evaluate (unless ``TEST.NO_TEST``)."""
        logger.info(f"{type(self).__name__} has nothing to train; evaluating")
        if not self.cfg.TEST.NO_TEST:
            self.test()

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        """Nothing to load (no learned weights)."""
        if directory:
            logger.info(f"{type(self).__name__} has no learned weights; not loading {directory}")
