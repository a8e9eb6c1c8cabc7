"""MMA: Multi-Modal Adapter (Yang et al., "MMA: Multi-Modal Adapter for Vision-Language Models",
CVPR 2024; code: ZjjConan/Multi-Modal-Adapter, trainer ``MultiModalAdapter``).

Adapters on the higher layers ``ADAPTER_START .. ADAPTER_END`` (1-based block numbers; upstream's
published config: 5 .. 12 of ViT-B/16's 12) of BOTH encoders, joined by a projection shared
between them. At block i of each encoder (text width d_t, vision width d_v, ``ADAPTER_DIM`` m):

    y_i = s * up_i(shared_i(down_i(ln_1(x))))      down_i = Linear(d, m) + ReLU,
    block output = x' + mlp(ln_2(x')) + y_i         shared_i = Linear(m, m) + ReLU (one per i,
                                                    used by text AND vision), up_i = Linear(m, d)

where ``x`` is the block's input, ``x' = x + attn(ln_1(x))`` and ``s = ADAPTER_SCALE``. Upstream
wraps the branch in gradient-scale layers (``clip/gsl.py``): the gradient into the branch's input
is multiplied by ``s`` and the one leaving its output by ``1/s``, so the adapters' parameters get
the gradient of the branch *without* ``s`` (the forward keeps ``s``); done the same way here.
The class prompts are fixed: ``"<TEXT_CTX_INIT> <name>."`` (the published config: "a photo of a").
Adapters start with Kaiming-normal weights (fan_out, ReLU) and zero biases, as upstream. Loss: CE
(logged as ``ce`` and ``loss``).

The adapters enter through forward hooks on the frozen CLIP blocks (the CLIP core's text shortcuts
step aside for hooked blocks; the text sequence is still cut after the last EOT, upstream runs
all 77 positions). Class text features are computed once per evaluation (upstream caches them at
the first evaluation and never refreshes them).

Kept deviations from upstream: ``ADAPTER_START`` 0 (upstream's adapter on the token embeddings and
after ``ln_pre``, not used by its configs) is refused with an error; so is an ``ADAPTER_DIM``
equal to an encoder's width (upstream then builds a module its forward cannot call). No
DataParallel (the hooks hold the adapters; DistributedDataParallel is fine).

Config section ``TRAINER.MMADAPTER`` (upstream's name, keys and defaults). The trainer is ``MMA``;
upstream's name ``MultiModalAdapter`` is registered too (:class:`MultiModalAdapter`, the same
trainer reading ``configs/trainers/MMA/``), so upstream's scripts and config paths run. Checkpoints in ``adapter_learner/`` (upstream's
folder, same keys; its fixed ``token_embedding`` and ``tokenized_prompts`` are rebuilt here and
ignored when loading).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP, tokenize
from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.registry import TRAINER_REGISTRY
from dassl_lite.utils.distributed import is_distributed

from .clip_trainer import ClipPromptTrainer
from .deep_prompts import vit_layers
from .prompting import PromptedCLIP, prompt_classnames

logger = logging.getLogger(__name__)


@register_config_extender("MMA")
def add_mma_config(cfg: CN) -> None:
    """``TRAINER.MMADAPTER`` with upstream names and defaults (``train.py``'s ``extend_cfg``)."""
    cfg.TRAINER.MMADAPTER = CN()
    cfg.TRAINER.MMADAPTER.TEXT_CTX_INIT = ""  # words before the class name in the prompt
    cfg.TRAINER.MMADAPTER.PREC = "amp"  # fp16, fp32, amp, bf16
    cfg.TRAINER.MMADAPTER.ADAPTER_START = 4  # first block (1-based) with adapters
    cfg.TRAINER.MMADAPTER.ADAPTER_END = 12  # last block (1-based) with adapters
    cfg.TRAINER.MMADAPTER.ADAPTER_DIM = 32  # bottleneck width m (shared projection m x m)
    cfg.TRAINER.MMADAPTER.ADAPTER_SCALE = 0.1  # s: output scale of the adapter branch


class GradientScale(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``scale`` (upstream ``GradientScaleLayer``)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


def _adapter(width: int, dim: int) -> nn.Module:
    """Upstream's per-encoder adapter: ``down`` (Linear + ReLU) and ``up`` (Linear)."""
    return nn.Sequential(OrderedDict([
        ("down", nn.Sequential(nn.Linear(width, dim), nn.ReLU())),
        ("up", nn.Linear(dim, width)),
    ]))


def _adapter_list(make, n_layers: int, start: int, end: int) -> nn.ModuleList:
    """Upstream's layout: a list of ``n_layers + 1`` entries, adapters at ``start .. end``."""
    return nn.ModuleList([make() if start <= i <= end else None for i in range(n_layers + 1)])


class AdapterLearner(nn.Module):
    """MMA's trainable part (upstream class and key names): ``text_adapter.<i>``,
    ``visual_adapter.<i>``, ``shared_adapter.<i>`` for blocks i = start .. end; the fixed class
    prompts as non-persistent buffers ``token_embedding`` [C, L, d_t] and ``eot_idx`` [C]."""

    def __init__(self, clip_model: CLIP, classnames: Sequence[str], text_ctx_init: str,
                 start: int, end: int, dim: int, scale: float):
        super().__init__()
        d_t, d_v = clip_model.transformer.width, clip_model.visual.width
        self.start, self.end, self.adapter_scale = start, end, float(scale)
        self.text_adapter = _adapter_list(lambda: _adapter(d_t, dim),
                                          clip_model.transformer.layers, start, end)
        self.visual_adapter = _adapter_list(lambda: _adapter(d_v, dim),
                                            clip_model.visual.layers, start, end)
        self.shared_adapter = _adapter_list(lambda: nn.Sequential(nn.Linear(dim, dim), nn.ReLU()),
                                            clip_model.visual.layers, start, end)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
        names = [f"{text_ctx_init} {name}." for name in prompt_classnames(classnames)]
        tokens = tokenize(names, context_length=clip_model.context_length)
        eot_idx = tokens.argmax(dim=-1)
        tokens = tokens[:, :int(eot_idx.max()) + 1].to(clip_model.token_embedding.weight.device)
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokens).to(clip_model.dtype)
        self.register_buffer("token_embedding", embedding, persistent=False)
        self.register_buffer("eot_idx", eot_idx.to(tokens.device), persistent=False)

    def branch(self, x: Tensor, block: nn.Module, adapter: nn.Module, i: int) -> Tensor:
        """The adapter branch ``y_i`` of block i for its input ``x`` (gradient-scaled as
        upstream)."""
        s = self.adapter_scale
        y = block.ln_1(GradientScale.apply(x, s))
        y = adapter.up(self.shared_adapter[i](adapter.down(y.to(adapter.up.weight.dtype)))) * s
        return GradientScale.apply(y, 1.0 / s).to(x.dtype)

    def attach(self, clip_model: CLIP) -> List[Any]:
        """Register the forward hooks that add the adapter branches to the blocks of both
        encoders; returns their handles."""
        handles = []
        for adapters, blocks in ((self.text_adapter, clip_model.transformer.resblocks),
                                 (self.visual_adapter, clip_model.visual.transformer.resblocks)):
            for i in range(self.start, self.end + 1):
                handles.append(blocks[i - 1].register_forward_hook(self._hook(adapters, i)))
        return handles

    def _hook(self, adapters: nn.ModuleList, i: int):
        def hook(block: nn.Module, inputs, output: Tensor) -> Tensor:
            return output + self.branch(inputs[0], block, adapters[i], i)
        return hook


class MMACLIP(PromptedCLIP):
    """Frozen CLIP with MMA's adapters hooked into both encoders."""

    def __init__(self, clip_model: CLIP, adapter_learner: AdapterLearner):
        super().__init__(clip_model)
        self.adapter_learner = adapter_learner
        self._hooks = adapter_learner.attach(clip_model)

    def text_features(self) -> Tensor:
        learner = self.adapter_learner
        return self.encode_text(learner.token_embedding, learner.eot_idx)


@TRAINER_REGISTRY.register()
class MMA(ClipPromptTrainer):
    """Multi-Modal Adapter; config section ``TRAINER.MMADAPTER``; checkpoints in
    ``adapter_learner/`` (upstream's folder)."""

    precision_key = "TRAINER.MMADAPTER.PREC"
    model_name = "adapter_learner"
    fixed_checkpoint_keys = ("token_embedding", "tokenized_prompts")

    def check_cfg(self, cfg) -> None:
        c = cfg.TRAINER.MMADAPTER
        if c.ADAPTER_START < 1 or c.ADAPTER_END < c.ADAPTER_START:
            raise ConfigError(f"TRAINER.MMADAPTER.ADAPTER_START..ADAPTER_END must be 1-based "
                              f"blocks with START <= END (0, upstream's adapter on the input "
                              f"embeddings, is not supported); got {c.ADAPTER_START}.."
                              f"{c.ADAPTER_END}")
        if c.ADAPTER_DIM < 1:
            raise ConfigError(f"TRAINER.MMADAPTER.ADAPTER_DIM must be >= 1; got {c.ADAPTER_DIM}")
        if not c.ADAPTER_SCALE > 0:
            raise ConfigError(f"TRAINER.MMADAPTER.ADAPTER_SCALE must be > 0 (the gradient is "
                              f"scaled by 1 / ADAPTER_SCALE); got {c.ADAPTER_SCALE}")

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> MMACLIP:
        c = self.cfg.TRAINER.MMADAPTER
        backbone = self.cfg.MODEL.BACKBONE.NAME
        n_vision = vit_layers(clip_model, "MMA", backbone)
        n_text = clip_model.transformer.layers
        if c.ADAPTER_END > min(n_text, n_vision):
            raise ConfigError(f"TRAINER.MMADAPTER.ADAPTER_END={c.ADAPTER_END} exceeds the layers "
                              f"of backbone {backbone!r} (text encoder {n_text}, vision encoder "
                              f"{n_vision}); use at most {min(n_text, n_vision)}")
        widths = {"text": clip_model.transformer.width, "vision": clip_model.visual.width}
        for encoder, width in widths.items():
            if c.ADAPTER_DIM == width:
                raise ConfigError(f"TRAINER.MMADAPTER.ADAPTER_DIM={c.ADAPTER_DIM} equals the "
                                  f"{encoder} width of {backbone!r}; upstream then builds an "
                                  f"adapter without down/up projections that it cannot run")
        learner = AdapterLearner(clip_model, classnames, c.TEXT_CTX_INIT, c.ADAPTER_START,
                                 c.ADAPTER_END, c.ADAPTER_DIM, c.ADAPTER_SCALE)
        logger.info(f"MMA: adapters (dim {c.ADAPTER_DIM}, scale {c.ADAPTER_SCALE}) on blocks "
                    f"{c.ADAPTER_START}..{c.ADAPTER_END} of both encoders")
        return MMACLIP(clip_model, learner)

    def trainable_module(self) -> nn.Module:
        return self.model.adapter_learner

    def maybe_data_parallel(self) -> None:
        """DistributedDataParallel under torchrun; never DataParallel (its replicas would not
        carry the hooks' adapters)."""
        if is_distributed():
            super().maybe_data_parallel()
        elif self.device.type == "cuda" and torch.cuda.device_count() > 1:
            logger.info("MMA: DataParallel not used (the adapters are forward hooks on the "
                        "frozen CLIP); run under torchrun to use several GPUs")

    def forward_backward(self, batch: Dict[str, Any]) -> Dict[str, float]:
        out = super().forward_backward(batch)
        return {"loss": out["loss"], "ce": out["loss"], "acc": out["acc"]}


@TRAINER_REGISTRY.register()
class MultiModalAdapter(MMA):
    """MMA under upstream's trainer name (upstream's ``TRAINER=MultiModalAdapter`` scripts and
    ``configs/trainers/MultiModalAdapter/`` paths): the same trainer, config section, configs
    (``configs/trainers/MMA/``) and checkpoints; only the run folders carry this name."""
