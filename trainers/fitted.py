"""Pieces shared by the methods that fit a head on frozen CLIP features (LinearProbeCLIP,
TipAdapter, TipAdapterF):

- :func:`extract_features`: CLIP image features of a list of records, in one pass, kept in memory.
- :class:`ClassIndex`: the class names a fitted head was fitted on, stored in its checkpoint as
  a tensor, and the map from them to the classes of the dataset being evaluated. A fitted head
  knows only the classes it saw: base-to-novel's ``test_new`` evaluates the base-class head on
  new classes, where each method says what it does with unseen classes.
- :class:`FittedCLIPTrainer`: a trainer whose "training" is a fit: ``train()`` fits once, writes
  the fitted tensors as the checkpoint of epoch ``OPTIM.MAX_EPOCH`` (so the protocol runners,
  which read the final epoch, see a finished run and evaluate that checkpoint) and tests.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from dassl_lite.data.data_manager import build_data_loader
from dassl_lite.engine import CheckpointError, TrainingFree

from .zsclip import ZeroshotCLIP

logger = logging.getLogger(__name__)


@torch.no_grad()
def extract_features(trainer, data, tfm, normalize: bool = True) -> Tuple[Tensor, Tensor]:
    """Image features [N, E] (float32, in ``data``'s order; L2-normalised if ``normalize``) and
    labels [N] of the records ``data`` under transform ``tfm``, on the trainer's device."""
    cfg = trainer.cfg
    loader = build_data_loader(cfg, "SequentialSampler", data, cfg.DATALOADER.TEST.BATCH_SIZE,
                               tfm=tfm, is_train=False, split_name="feature extraction")
    clip_model = trainer.unwrapped_model.clip
    features, labels = [], []
    for batch in loader:
        with trainer.precision.autocast():
            out = clip_model.visual(batch["img"].to(trainer.device)).float()
        features.append(out / out.norm(dim=-1, keepdim=True) if normalize else out)
        labels.append(batch["label"].to(trainer.device))
    return torch.cat(features), torch.cat(labels)


class ClassIndex:
    """Class names stored as a uint8 tensor (UTF-8 JSON), so they travel in a state dict."""

    @staticmethod
    def encode(names: Sequence[str]) -> Tensor:
        return torch.tensor(list(json.dumps(list(names)).encode("utf-8")), dtype=torch.uint8)

    @staticmethod
    def decode(tensor: Tensor) -> List[str]:
        return json.loads(bytes(tensor.cpu().tolist()).decode("utf-8")) if tensor.numel() else []

    @staticmethod
    def mapping(fitted: Sequence[str], current: Sequence[str], device=None) -> Tensor:
        """[len(fitted), len(current)] 0/1 matrix: entry (i, j) is 1 when fitted class i is
        current class j (matched by name)."""
        where = {name: j for j, name in enumerate(current)}
        out = torch.zeros(len(fitted), len(current), device=device)
        for i, name in enumerate(fitted):
            if name in where:
                out[i, where[name]] = 1.0
        return out


def resize_like(module: nn.Module, state_dict: Dict[str, Tensor], fixed_dims: Dict[str, int]) -> None:
    """Give ``module``'s tensors the shapes of a checkpoint's (a fitted head's size depends on
    the data it was fitted on). ``fixed_dims[name]`` is the feature width the tensor's last
    dimension must keep; a different one is a CheckpointError naming both."""
    own = dict(module.named_parameters())
    own.update(module.named_buffers())
    for name, tensor in own.items():
        if name not in state_dict or state_dict[name].shape == tensor.shape:
            continue
        new_shape = tuple(state_dict[name].shape)
        if name in fixed_dims and new_shape[-1:] != (fixed_dims[name],):
            raise CheckpointError(f"'{name}' has shape {new_shape} in the checkpoint but this "
                                  f"backbone's features have width {fixed_dims[name]}")
        tensor.data = torch.empty(new_shape, dtype=tensor.dtype, device=tensor.device)


class FittedHeadMixin:
    """Checkpoints of a head whose size depends on the data it was fitted on: they hold the
    whole ``fitted`` module (persistent buffers and parameters), and loading first gives the
    module the checkpoint's shapes. The module lists in ``feature_width_keys`` the tensors whose
    last dimension is the CLIP feature width (checked against this backbone)."""

    def model_state_dict(self, name: str) -> Dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self._models[name].state_dict().items()}

    def _load_into(self, name: str, state_dict: Dict[str, Tensor], path: str) -> None:
        module = self._models[name]
        width = self.unwrapped_model.clip.embed_dim
        resize_like(module, state_dict, {k: width for k in module.feature_width_keys})
        super()._load_into(name, state_dict, path)


class FittedCLIPTrainer(FittedHeadMixin, ZeroshotCLIP):
    """A frozen CLIP with the dataset's hand-written prompt and a head fitted on its features.

    Subclasses set ``model_name`` and ``precision_key``, build a model whose ``fitted`` module
    holds the fitted tensors (buffers), and implement :meth:`fit`.
    """

    fixed_checkpoint_keys: Sequence[str] = ()
    # A head may read unnormalised image features (the linear probe), which the feature cache
    # does not hold; a subclass that reads only normalised features sets this to False.
    prompted_image_encoder = True

    def build_model(self) -> None:
        super().build_model()
        self.register_model(self.model_name, self.model.fitted)
        if self.cfg.MODEL.INIT_WEIGHTS:
            self.load_init_weights(self.cfg.MODEL.INIT_WEIGHTS)

    def fit(self) -> None:
        """Fit the head on the training data (and select its hyper-parameters on val)."""
        raise NotImplementedError(f"{type(self).__name__} must implement fit()")

    def train(self) -> None:
        """Fit, write the checkpoint of epoch ``OPTIM.MAX_EPOCH``, then test."""
        start = time.time()
        self.set_model_mode("eval")
        self.fit()
        self.model_epoch = self.max_epoch
        self.save_model(self.max_epoch - 1, self.output_dir)
        logger.info(f"Fitted in {time.time() - start:.1f} s")
        if not self.cfg.TEST.NO_TEST:
            self.test()

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        """Load the fitted head (the engine's loader; the no-op ZeroshotCLIP inherits from
        :class:`TrainingFree` is skipped)."""
        super(TrainingFree, self).load_model(directory, epoch)
