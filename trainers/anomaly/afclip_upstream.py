"""Import AF-CLIP's released weights (Faustinaqq/AF-CLIP ``weight/``) without running pickles.

Upstream saves ``{dataset}_prompt.pt`` as a pickled ``nn.Parameter`` [1, P, width] and
``{dataset}_adaptor.pt`` as a pickled WHOLE ``clip.adaptor.Adaptor`` module (loading it needs
upstream's package and ``torch.load(weights_only=False)``, which runs any code a file carries).
Here both files are read with ``torch.load(weights_only=True)``; for the adaptor, the handful of
class names such a file may reference are allow-listed as inert record classes
(:class:`PickledModule`): unpickling only fills their ``__dict__``, and the parameters are then
read from the recorded ``_parameters`` / ``_modules`` dicts. Any other global is refused by
torch's restricted unpickler. The result is our checkpoint layout (``AFCLIPLearner`` keys).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Dict, Iterator, Tuple

import torch
from torch import Tensor

from dassl_lite.engine.anomaly_core import ReleasedWeightsError, load_released_weights

# Class paths a pickled upstream adaptor references (clip/adaptor.py and torch.nn).
UPSTREAM_MODULE_CLASSES = (
    "clip.adaptor.Adaptor", "clip.adaptor.BasicTransformerBlock", "clip.adaptor.CrossAttention",
    "torch.nn.modules.linear.Linear", "torch.nn.modules.normalization.LayerNorm",
    "torch.nn.modules.container.Sequential", "torch.nn.modules.dropout.Dropout",
)
ADAPTOR_KEYS = ("attention.attn.to_q.weight", "attention.attn.to_k.weight",
                "attention.attn.to_v.weight", "attention.attn.to_out.0.weight",
                "attention.attn.to_out.0.bias", "attention.norm.weight", "attention.norm.bias")


class UpstreamWeightsError(ReleasedWeightsError):
    """A released AF-CLIP file that is missing or not in the expected format."""


class PickledModule:
    """Inert stand-in for a pickled ``nn.Module``: unpickling only records its state."""

    def __setstate__(self, state: dict) -> None:
        self.__dict__["state"] = dict(state) if isinstance(state, dict) else {}


def _named_parameters(node: PickledModule, prefix: str = "") -> Iterator[Tuple[str, Tensor]]:
    state = node.state
    for name, param in (state.get("_parameters") or {}).items():
        if param is not None:
            yield prefix + name, param
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, PickledModule):
            yield from _named_parameters(child, f"{prefix}{name}.")


def _restricted_load(path: str, what: str):
    return load_released_weights(path, what, "AF-CLIP", UPSTREAM_MODULE_CLASSES, PickledModule,
                                 UpstreamWeightsError)


def load_upstream_adaptor(path: str) -> "OrderedDict[str, Tensor]":
    """State dict (upstream key names) of a pickled ``clip.adaptor.Adaptor`` file."""
    obj = _restricted_load(path, "adaptor")
    if isinstance(obj, dict):  # already a state dict
        state = OrderedDict((k, v) for k, v in obj.items())
    elif isinstance(obj, PickledModule):
        state = OrderedDict(_named_parameters(obj))
    else:
        raise UpstreamWeightsError(f"{path!r} holds a {type(obj).__name__}; expected a pickled "
                                   f"clip.adaptor.Adaptor module or its state dict")
    if set(state) != set(ADAPTOR_KEYS):
        raise UpstreamWeightsError(f"{path!r}: adaptor keys {sorted(state)} differ from the "
                                   f"expected {sorted(ADAPTOR_KEYS)}")
    return OrderedDict((k, state[k].detach().float().clone()) for k in ADAPTOR_KEYS)


def load_upstream_prompt(path: str) -> Tensor:
    """The state prompt [1, P, width] of a pickled ``nn.Parameter`` file."""
    obj = _restricted_load(path, "prompt")
    if not isinstance(obj, Tensor) or obj.dim() != 3 or obj.shape[0] != 1:
        shape = list(obj.shape) if isinstance(obj, Tensor) else type(obj).__name__
        raise UpstreamWeightsError(f"{path!r}: expected a state prompt tensor [1, P, width]; "
                                   f"got {shape}")
    return obj.detach().float().clone()


def convert_upstream(weight_dir: str, dataset: str) -> "OrderedDict[str, Tensor]":
    """``{dataset}_prompt.pt`` + ``{dataset}_adaptor.pt`` -> an ``AFCLIPLearner`` state dict."""
    prompt = load_upstream_prompt(os.path.join(weight_dir, f"{dataset}_prompt.pt"))
    adaptor = load_upstream_adaptor(os.path.join(weight_dir, f"{dataset}_adaptor.pt"))
    state: Dict[str, Tensor] = OrderedDict(
        [("prompt.state_prompt_embedding", prompt)])
    state.update((f"adaptor.{k}", v) for k, v in adaptor.items())
    return state
