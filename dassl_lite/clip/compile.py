"""``MODEL.COMPILE``: ``torch.compile`` of a frozen CLIP's encoders, in place.

The image encoder's ``forward`` is compiled through ``nn.Module.compile`` (parameter names and
state dicts stay as they are, so checkpoints and feature-cache digests do not change); the text
encoder's ``encode_text_embeddings`` is replaced on the instance by its compiled version. The
data-dependent parts of the text path (the shared-prefix length, the EOT cut) become graph
breaks with their values guarded, so batches of one shape and prompt layout reuse one graph.

Compiling turns off AOTAutograd's donated buffers for the process
(``torch._functorch.config.donated_buffer = False``): with them a compiled backward frees the
activations it saved after one pass, and a trainer that backpropagates one forward graph once per
loss (ProGrad, ``model_backward_each_and_update``) needs them twice. The setting is global on
purpose: a graph is reused as it was first compiled, so one compiled by an earlier job of the same
process (a protocol's in-process launcher) would keep its donated buffers. The cost is memory in
the backward pass (the saved activations are freed after it rather than reused inside it).
"""
from __future__ import annotations

import torch
from torch import nn


def compiler_unavailable() -> str:
    """Why ``torch.compile`` cannot run here ("" when it can): no ``torch.compile``, or no C++
    compiler for the CPU backend."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    import shutil

    if not torch.cuda.is_available() and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "no C++ compiler (g++, c++ or clang++) on PATH for torch.compile's CPU backend"
    return ""


def compile_clip(clip_model: nn.Module, **options) -> nn.Module:
    """Compile ``clip_model``'s image encoder and text encoder in place; returns it.
    ``options`` go to ``torch.compile`` (e.g. ``backend``, ``mode``)."""
    if getattr(clip_model, "_compiled", False):
        raise RuntimeError("this CLIP's encoders are compiled already (compile_clip called twice)")
    keep_saved_buffers()
    clip_model.visual.compile(**options)
    clip_model.encode_text_embeddings = torch.compile(clip_model.encode_text_embeddings, **options)
    clip_model._compiled = True
    return clip_model


def keep_saved_buffers() -> None:
    """Compiled backward passes keep their saved activations until autograd frees them, so a
    graph can be backpropagated more than once (``retain_graph=True``); see the module's doc."""
    import torch._functorch.config as functorch_config

    functorch_config.donated_buffer = False
