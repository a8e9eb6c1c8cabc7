"""``MODEL.COMPILE``: ``torch.compile`` of a frozen CLIP's encoders, in place.

The image encoder's ``forward`` is compiled through ``nn.Module.compile`` (parameter names and
state dicts stay as they are, so checkpoints and feature-cache digests do not change); the text
encoder's ``encode_text_embeddings`` is replaced on the instance by its compiled version. The
data-dependent parts of the text path (the shared-prefix length, the EOT cut) become graph
breaks with their values guarded, so batches of one shape and prompt layout reuse one graph.
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
    clip_model.visual.compile(**options)
    clip_model.encode_text_embeddings = torch.compile(clip_model.encode_text_embeddings, **options)
    clip_model._compiled = True
    return clip_model
