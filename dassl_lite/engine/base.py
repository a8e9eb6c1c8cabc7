"""TrainerBase: registered models, optimisation steps, checkpoints and the training template."""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from ..errors import DasslLiteError
from ..utils.seed import get_rng_state, set_rng_state
from .checkpoint import (
    BEST_FILE, EPOCH_FILE, CheckpointError, epoch_file, latest_checkpoint, load_checkpoint,
    resume_checkpoint, save_checkpoint, trainable_state_dict,
)
from .distributed import is_distributed
from .interrupt import check_interrupt

logger = logging.getLogger(__name__)


class NonFiniteLossError(DasslLiteError, FloatingPointError):
    """The loss became NaN or infinite; training stopped and checkpoints were left intact."""


class TrainerBase:
    """Holds the registered models and runs ``before_train / epochs / after_train``.

    ``self._models[name]`` is saved in ``<output_dir>/<name>/`` with its optimizer and scheduler.
    """

    # Task family: "classification" or "anomaly"; a trainer runs on datasets of its task.
    task = "classification"

    def __init__(self) -> None:
        self._models: "OrderedDict[str, nn.Module]" = OrderedDict()
        self._optims: "OrderedDict[str, Optional[torch.optim.Optimizer]]" = OrderedDict()
        self._scheds: "OrderedDict[str, Any]" = OrderedDict()
        self._writer = None
        self.scaler: Optional["torch.amp.GradScaler"] = None
        self.epoch = 0
        self.batch_idx = 0
        self.num_batches = 0
        self.model_epoch: Optional[int] = None  # epoch of the weights now in the model
        self.last_checkpoint: Optional[str] = None
        self._lr_stepped = False

    # ------------------------------------------------------------------ models
    def register_model(
        self, name: str = "model", model: Optional[nn.Module] = None, optim=None, sched=None
    ) -> None:
        """Register ``model`` (with its optimizer and scheduler) to be trained and checkpointed."""
        if name in self._models:
            raise DasslLiteError(f"A model named {name!r} is already registered")
        if model is None:
            raise DasslLiteError(f"register_model({name!r}) needs a module; got None")
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def get_model_names(self, names: Optional[Sequence[str]] = None) -> List[str]:
        if names is None:
            return list(self._models)
        names = [names] if isinstance(names, str) else list(names)
        for n in names:
            if n not in self._models:
                raise DasslLiteError(f"No registered model {n!r}; registered: {list(self._models)}")
        return names

    def set_model_mode(self, mode: str = "train", names=None) -> None:
        for name in self.get_model_names(names):
            self._models[name].train(mode == "train")

    # ------------------------------------------------------------------ optimisation
    def model_zero_grad(self, names=None) -> None:
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad(set_to_none=True)

    def check_loss(self, loss: torch.Tensor) -> None:
        """Stop with a clear message when ``loss`` is NaN or infinite."""
        if torch.isfinite(loss).all():
            return
        step = self.epoch * self.num_batches + self.batch_idx
        kept = self.last_checkpoint or "none written yet"
        raise NonFiniteLossError(
            f"Loss is {loss.detach().float().item()} at epoch {self.epoch + 1}, "
            f"batch {self.batch_idx + 1} (step {step}). Training stopped; the last good "
            f"checkpoint is kept: {kept}. Try a lower OPTIM.LR or PREC fp32/amp."
        )

    def model_backward(self, loss: torch.Tensor) -> None:
        self.check_loss(loss)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def model_update(self, names=None) -> None:
        for name in self.get_model_names(names):
            optim = self._optims[name]
            if optim is None:
                continue
            if self.scaler is not None:
                self.scaler.step(optim)
            else:
                optim.step()
        if self.scaler is not None:
            self.scaler.update()

    def model_backward_and_update(self, loss: torch.Tensor, names=None) -> None:
        """Zero grads, backpropagate ``loss`` (scaled under amp), step the optimizers."""
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)

    def combine_gradients(self, grads: Mapping[str, List[Optional[torch.Tensor]]],
                          params: List[nn.Parameter]) -> List[Optional[torch.Tensor]]:
        """The gradient each of ``params`` steps with, from the gradient of every loss given to
        :meth:`model_backward_each_and_update` (``grads[loss name][i]`` belongs to
        ``params[i]``; None where that loss does not reach it). Default: their sum, as one
        backward pass of the summed losses. Override for gradient surgery (ProGrad). Under amp
        every gradient carries the same loss scale, so a rule must satisfy
        ``f(s * g) = s * f(g)`` for s > 0 (a projection does)."""
        combined: List[Optional[torch.Tensor]] = []
        for per_param in zip(*grads.values()):
            present = [g for g in per_param if g is not None]
            combined.append(sum(present[1:], present[0]) if present else None)
        return combined

    def model_backward_each_and_update(self, losses: Mapping[str, torch.Tensor],
                                       names=None) -> None:
        """Backpropagate each of ``losses`` on its own, in order, keeping every loss's gradient
        of the trainable parameters of the registered models ``names``; set each parameter's
        gradient to :meth:`combine_gradients` of them and step the optimizers. One forward
        pass, one backward pass per loss (the graph is kept until the last)."""
        if not losses:
            raise DasslLiteError("model_backward_each_and_update needs at least one loss")
        if is_distributed() and len(losses) > 1:
            raise DasslLiteError(
                f"{type(self).__name__} backpropagates {len(losses)} losses per step, which "
                f"DistributedDataParallel does not support; run it in one process")
        self.model_zero_grad(names)
        params = [p for n in self.get_model_names(names)
                  for p in self._models[n].parameters() if p.requires_grad]
        grads: Dict[str, List[Optional[torch.Tensor]]] = {}
        last = len(losses) - 1
        for i, (key, loss) in enumerate(losses.items()):
            self.check_loss(loss)
            scaled = self.scaler.scale(loss) if self.scaler is not None else loss
            scaled.backward(retain_graph=i < last)
            grads[key] = [p.grad for p in params]
            for p in params:  # the next loss's gradient starts from zero
                p.grad = None
        for p, g in zip(params, self.combine_gradients(grads, params)):
            p.grad = g
        self.model_update(names)

    def update_lr(self, names=None) -> None:
        """Step the schedulers (once per epoch; the loop does it if the method did not)."""
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()
        self._lr_stepped = True

    def get_current_lr(self, names=None) -> float:
        name = self.get_model_names(names)[0]
        optim = self._optims[name]
        return optim.param_groups[0]["lr"] if optim is not None else 0.0

    # ------------------------------------------------------------------ checkpoints
    def save_model(
        self, epoch: int, directory: str, is_best: bool = False, val_result=None,
        model_name: str = "",
    ) -> None:
        """Save every registered model's :meth:`model_state_dict` as ``model.pth.tar-<epoch + 1>``."""
        rng = get_rng_state()
        for name in self._models:
            optim, sched = self._optims[name], self._scheds[name]
            state = {
                "state_dict": self.model_state_dict(name),
                "epoch": epoch + 1,
                "optimizer": optim.state_dict() if optim is not None else None,
                "scheduler": sched.state_dict() if sched is not None else None,
                "val_result": val_result,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "rng_state": rng,
                **self.checkpoint_extras(name),
            }
            path = save_checkpoint(
                state, os.path.join(directory, name), is_best=is_best, model_name=model_name
            )
            if model_name != BEST_FILE:
                self.last_checkpoint = path
            logger.info(f"Checkpoint saved to {path}")

    def checkpoint_extras(self, name: str) -> Dict[str, Any]:
        """Extra entries for the checkpoint of model ``name`` (method state a resumed run needs,
        e.g. a running weight average); given back to :meth:`restore_checkpoint_extras`."""
        return {}

    def restore_checkpoint_extras(self, name: str, ckpt: Dict[str, Any]) -> None:
        """Restore what :meth:`checkpoint_extras` saved, from checkpoint dict ``ckpt`` (resume)."""

    def model_state_dict(self, name: str) -> Dict[str, torch.Tensor]:
        """What a checkpoint of model ``name`` holds: its trainable tensors. Override for a
        model that is fitted rather than trained (e.g. a feature cache or a linear probe)."""
        return trainable_state_dict(self._models[name])

    def remap_checkpoint_state(
        self, name: str, state_dict: Dict[str, torch.Tensor]
    ) -> Dict[str, torch.Tensor]:
        """Override to rename or drop keys of checkpoints written by other code (e.g. upstream)."""
        return state_dict

    def _load_into(self, name: str, state_dict: Dict[str, torch.Tensor], path: str) -> None:
        model = self._models[name]
        state_dict = {(k[7:] if k.startswith("module.") else k): v for k, v in state_dict.items()}
        state_dict = self.remap_checkpoint_state(name, state_dict)
        expected = self.model_state_dict(name)
        all_keys = set(model.state_dict())
        missing = [k for k in expected if k not in state_dict]
        unknown = [k for k in state_dict if k not in all_keys]
        if missing or unknown:
            raise CheckpointError(
                f"Checkpoint {path!r} does not fit model {name!r}: missing trainable keys "
                f"{missing or 'none'}; unexpected keys {unknown or 'none'}"
            )
        for k, ref in expected.items():
            if tuple(state_dict[k].shape) != tuple(ref.shape):
                raise CheckpointError(
                    f"Checkpoint {path!r}: '{k}' has shape {tuple(state_dict[k].shape)} but "
                    f"the model expects {tuple(ref.shape)} (different class count, context "
                    f"length or backbone?)"
                )
        frozen = len(state_dict) - len(expected)
        if frozen:
            logger.info(f"Ignored {frozen} frozen (non-trainable) keys in {path}")
        model.load_state_dict({k: state_dict[k] for k in expected}, strict=False)

    def _checkpoint_path(self, directory: str, name: str, epoch: Optional[int]) -> str:
        model_dir = os.path.join(directory, name)
        if epoch is not None:
            return os.path.join(model_dir, epoch_file(epoch))
        best = os.path.join(model_dir, BEST_FILE)
        if os.path.isfile(best):
            return best
        latest = latest_checkpoint(model_dir) if os.path.isdir(model_dir) else None
        if latest is None:
            raise CheckpointError(
                f"No checkpoint for model {name!r} in {model_dir!r}: expected {BEST_FILE} or a "
                f"'checkpoint' file naming model.pth.tar-<epoch>; pass --load-epoch N to pick one"
            )
        return latest

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        """Load ``directory/<name>/model.pth.tar-<epoch>`` (default: best, else latest)."""
        if not directory:
            raise DasslLiteError("load_model needs a directory (--model-dir); got an empty path")
        for name in self.get_model_names():
            path = self._checkpoint_path(directory, name, epoch)
            ckpt = load_checkpoint(path)
            self._load_into(name, ckpt["state_dict"], path)
            self.model_epoch = ckpt.get("epoch")
            val = ckpt.get("val_result")
            val_txt = f", val_result={val:.1f}" if isinstance(val, (int, float)) else ""
            logger.info(f"Loaded {path} into {name!r} (epoch={self.model_epoch}{val_txt})")

    def resume_model_if_exist(self, directory: str) -> int:
        """Restore the latest checkpoints in ``directory``; returns the epoch to start from."""
        names = self.get_model_names()
        found = {n: resume_checkpoint(os.path.join(directory, n)) for n in names}
        if not any(found.values()):
            return 0
        absent = [n for n, p in found.items() if p is None]
        if absent:
            raise CheckpointError(f"Cannot resume from {directory!r}: no checkpoint for {absent}")
        found = self._common_epoch(directory, found)
        start_epoch = 0
        for name, path in found.items():
            ckpt = load_checkpoint(path)
            self._load_into(name, ckpt["state_dict"], path)
            for obj, key in ((self._optims[name], "optimizer"), (self._scheds[name], "scheduler")):
                if obj is not None and ckpt.get(key) is not None:
                    obj.load_state_dict(ckpt[key])
            if self.scaler is not None and ckpt.get("scaler") is not None:
                self.scaler.load_state_dict(ckpt["scaler"])
            if ckpt.get("rng_state") is not None:
                set_rng_state(ckpt["rng_state"])
            self.restore_checkpoint_extras(name, ckpt)
            start_epoch = ckpt["epoch"]
            self.last_checkpoint = path
            logger.info(f"Resuming {name!r} from {path} (epoch {start_epoch})")
        self.model_epoch = start_epoch
        logger.warning(
            f"Resumed from {directory} at epoch {start_epoch}; use a new --output-dir to start afresh"
        )
        return start_epoch

    @staticmethod
    def _common_epoch(directory: str, found: Dict[str, str]) -> Dict[str, str]:
        """``found`` with every model at the oldest epoch among them, when a kill between two
        models' saves left them at different epochs."""
        epochs = {n: int(m.group(1)) for n, p in found.items()
                  if (m := EPOCH_FILE.match(os.path.basename(p)))}
        if len(set(epochs.values())) <= 1:
            return found
        oldest = min(epochs.values())
        common = {n: os.path.join(directory, n, epoch_file(oldest)) for n in found}
        lacking = [p for p in common.values() if not os.path.isfile(p)]
        if lacking:
            raise CheckpointError(
                f"Cannot resume from {directory!r}: its models stopped at different epochs "
                f"({', '.join(f'{n} {e}' for n, e in sorted(epochs.items()))}) and "
                f"{', '.join(lacking)} is missing")
        logger.warning(f"Models of {directory} stopped at different epochs "
                       f"({', '.join(f'{n} {e}' for n, e in sorted(epochs.items()))}): resuming "
                       f"all from epoch {oldest}")
        return common

    # ------------------------------------------------------------------ tensorboard
    def init_writer(self, log_dir: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=log_dir)

    def close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write_scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)

    # ------------------------------------------------------------------ template
    def train(self, start_epoch: int, max_epoch: int) -> None:
        """``before_train``, then per epoch ``before_epoch / run_epoch / after_epoch``,
        then ``after_train`` (in a ``finally``; it knows whether training completed)."""
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch
        self.completed = False
        try:
            self.before_train()
            for self.epoch in range(self.start_epoch, self.max_epoch):
                self._lr_stepped = False
                self.before_epoch()
                self.run_epoch()
                if not self._lr_stepped:
                    self.update_lr()
                self.model_epoch = self.epoch + 1
                self.after_epoch()
                check_interrupt()  # Ctrl-C (under stop_on_interrupt) stops here or mid-epoch
            self.completed = True
        finally:
            self.after_train()

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def run_epoch(self) -> None:
        raise NotImplementedError

    def forward_backward(self, batch: Dict[str, Any]) -> Dict[str, float]:
        """One optimisation step on ``batch``; returns the losses/metrics to log."""
        raise NotImplementedError
