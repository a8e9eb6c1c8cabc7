"""Checkpoint layouts of supervised ViTs, converted to timm's state-dict keys.

- Google's ``.npz`` (google-research/vision_transformer; the ``imagenet21k_ViT-B_16.npz`` that
  KMnP/vpt loads): ``embedding/kernel`` (HWIO), ``cls``, ``Transformer/posembed_input/...``,
  ``Transformer/encoderblock_<i>/MultiHeadDotProductAttention_1/{query,key,value,out}``,
  ``MlpBlock_3/Dense_{0,1}``, ``LayerNorm_{0,2}``, ``Transformer/encoder_norm``; ``head`` and
  ``pre_logits`` are the pretraining classifier (dropped).
- torchvision's ``VisionTransformer`` (``conv_proj``, ``class_token``, ``encoder.pos_embedding``,
  ``encoder.layers.encoder_layer_<i>.{ln_1,self_attention,ln_2,mlp}``, ``encoder.ln``).
- KMnP/vpt's own torch ``VisionTransformer`` (``src/models/vit_backbones/vit.py``, from
  jeonsworld/ViT-pytorch): ``transformer.embeddings.{patch_embeddings,cls_token,
  position_embeddings}``, ``transformer.encoder.layer.<i>.{attention_norm,ffn_norm,ffn.fc1,ffn.fc2,
  attn.{query,key,value,out}}``, ``transformer.encoder.encoder_norm`` (the ``enc.`` part of its
  checkpoints, e.g. of an ``end2end`` run).
- timm's ``VisionTransformer`` (the target layout; kept as is).

Each converter returns ``(state_dict, sources)``: timm keys -> tensors, and timm key -> the name
the tensor had in the file (for error messages).
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import DasslLiteError

__all__ = ["from_google_npz", "from_torchvision", "from_kmnp", "detect_layout", "HEAD_KEYS"]

Converted = Tuple[Dict[str, Tensor], Dict[str, str]]
# Keys of a pretraining classifier (any layout, after conversion): not part of the backbone.
HEAD_KEYS = ("head.", "pre_logits.", "fc_norm.", "heads.")


def detect_layout(keys) -> str:
    """``google``, ``torchvision``, ``kmnp`` or ``timm`` from a checkpoint's key names."""
    keys = set(keys)
    if "embedding/kernel" in keys or any(k.startswith("Transformer/") for k in keys):
        return "google"
    if "conv_proj.weight" in keys or "class_token" in keys:
        return "torchvision"
    if "transformer.embeddings.patch_embeddings.weight" in keys:
        return "kmnp"
    if "patch_embed.proj.weight" in keys or "cls_token" in keys:
        return "timm"
    sample = sorted(keys)[:5]
    raise DasslLiteError(f"not a ViT checkpoint in a known layout (Google .npz, timm or "
                         f"torchvision state dict); its first keys are {sample}")


def _t(array) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).float()


def _dense(kernel) -> Tensor:
    """A Flax Dense/attention kernel [in, ..., out...] as a torch Linear weight [out, in]."""
    kernel = np.asarray(kernel)
    return _t(kernel.reshape(kernel.shape[0], -1).T)


def _attn_out(kernel) -> Tensor:
    """The attention output kernel [heads, head_dim, D] as a Linear weight [D, heads*head_dim]."""
    kernel = np.asarray(kernel)
    return _t(kernel.reshape(-1, kernel.shape[-1]).T)


def from_google_npz(npz: Mapping[str, np.ndarray]) -> Converted:
    """timm keys from Google's ViT ``.npz`` arrays."""
    out: Dict[str, Tensor] = {}
    src: Dict[str, str] = {}

    def put(key: str, value: Tensor, source: str) -> None:
        out[key], src[key] = value, source

    def need(name: str) -> np.ndarray:
        if name not in npz:
            raise DasslLiteError(f"the .npz has no array {name!r} (Google ViT layout expected)")
        return npz[name]

    put("patch_embed.proj.weight", _t(need("embedding/kernel").transpose(3, 2, 0, 1)),
        "embedding/kernel")
    put("patch_embed.proj.bias", _t(need("embedding/bias")), "embedding/bias")
    put("cls_token", _t(need("cls")), "cls")
    put("pos_embed", _t(need("Transformer/posembed_input/pos_embedding")),
        "Transformer/posembed_input/pos_embedding")
    for ours, theirs in (("weight", "scale"), ("bias", "bias")):
        put(f"norm.{ours}", _t(need(f"Transformer/encoder_norm/{theirs}")),
            f"Transformer/encoder_norm/{theirs}")
    blocks = sorted({int(m.group(1)) for k in npz
                     for m in [re.match(r"Transformer/encoderblock_(\d+)/", k)] if m})
    for i in blocks:
        _google_block(need, put, i)
    return out, src


def _google_block(need, put, i: int) -> None:
    """The timm tensors of encoder block ``i`` of a Google ``.npz``."""
    root = f"Transformer/encoderblock_{i}"
    att = f"{root}/MultiHeadDotProductAttention_1"
    qkv = [f"{att}/{p}" for p in ("query", "key", "value")]
    put(f"blocks.{i}.attn.qkv.weight",
        torch.cat([_dense(need(f"{p}/kernel")) for p in qkv]), f"{att}/{{query,key,value}}/kernel")
    put(f"blocks.{i}.attn.qkv.bias",
        torch.cat([_t(need(f"{p}/bias")).reshape(-1) for p in qkv]),
        f"{att}/{{query,key,value}}/bias")
    put(f"blocks.{i}.attn.proj.weight", _attn_out(need(f"{att}/out/kernel")), f"{att}/out/kernel")
    put(f"blocks.{i}.attn.proj.bias", _t(need(f"{att}/out/bias")), f"{att}/out/bias")
    for n, dense in ((1, "Dense_0"), (2, "Dense_1")):
        name = f"{root}/MlpBlock_3/{dense}"
        put(f"blocks.{i}.mlp.fc{n}.weight", _dense(need(f"{name}/kernel")), f"{name}/kernel")
        put(f"blocks.{i}.mlp.fc{n}.bias", _t(need(f"{name}/bias")), f"{name}/bias")
    for ours, ln in (("norm1", "LayerNorm_0"), ("norm2", "LayerNorm_2")):
        for p, q in (("weight", "scale"), ("bias", "bias")):
            put(f"blocks.{i}.{ours}.{p}", _t(need(f"{root}/{ln}/{q}")), f"{root}/{ln}/{q}")


# torchvision -> timm, per block (torchvision >= 0.13 names; mlp.linear_1/2 of older releases too)
_TV_BLOCK = {
    "ln_1": "norm1", "ln_2": "norm2", "self_attention.in_proj_weight": "attn.qkv.weight",
    "self_attention.in_proj_bias": "attn.qkv.bias", "self_attention.out_proj": "attn.proj",
    "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2", "mlp.linear_1": "mlp.fc1", "mlp.linear_2": "mlp.fc2",
}
_TV_TOP = {"conv_proj.": "patch_embed.proj.", "class_token": "cls_token",
           "encoder.pos_embedding": "pos_embed", "encoder.ln.": "norm.", "heads.": "heads."}


def from_torchvision(state: Mapping[str, Tensor]) -> Converted:
    """timm keys from a torchvision ``VisionTransformer`` state dict."""
    out: Dict[str, Tensor] = {}
    src: Dict[str, str] = {}
    for key, value in state.items():
        new = _tv_key(key)
        if new is None:
            raise DasslLiteError(f"unexpected key {key!r} in a torchvision ViT state dict")
        out[new], src[new] = value, key
    return out, src


def _tv_key(key: str):
    return _block_key(key, r"encoder\.layers\.encoder_layer_(\d+)\.(.+)$", _TV_BLOCK, _TV_TOP)


def _block_key(key: str, block_pattern: str, block: Mapping[str, str], top: Mapping[str, str]):
    """The timm key of ``key``: per-block names (``block_pattern`` captures the block index and
    the rest) through ``block``, others through ``top`` (prefixes end in "."); None if unknown."""
    m = re.match(block_pattern, key)
    if m:
        rest = m.group(2)
        for old, new in block.items():
            if rest == old or rest.startswith(old + "."):
                return f"blocks.{m.group(1)}.{new}{rest[len(old):]}"
        return None
    for old, new in top.items():
        if key == old or (old.endswith(".") and key.startswith(old)):
            return new + key[len(old):]
    return None

# KMnP/vpt -> timm, per block; query/key/value are concatenated into timm's qkv
_KMNP_BLOCK = {"attention_norm": "norm1", "ffn_norm": "norm2", "ffn.fc1": "mlp.fc1",
               "ffn.fc2": "mlp.fc2", "attn.out": "attn.proj"}
_KMNP_TOP = {"transformer.embeddings.patch_embeddings.": "patch_embed.proj.",
             "transformer.embeddings.cls_token": "cls_token",
             "transformer.embeddings.position_embeddings": "pos_embed",
             "transformer.encoder.encoder_norm.": "norm.", "head.": "head."}
_QKV = ("query", "key", "value")
_KMNP_QKV = re.compile(r"transformer\.encoder\.layer\.(\d+)\.attn\.(query|key|value)\."
                       r"(weight|bias)$")


def from_kmnp(state: Mapping[str, Tensor]) -> Converted:
    """timm keys from a state dict of KMnP/vpt's torch ``VisionTransformer``."""
    out: Dict[str, Tensor] = {}
    src: Dict[str, str] = {}
    qkv: Dict[Tuple[str, str], Dict[str, Tensor]] = {}
    for key, value in state.items():
        m = _KMNP_QKV.match(key)
        if m:
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
            continue
        new = _kmnp_key(key)
        if new is None:
            raise DasslLiteError(f"unexpected key {key!r} in a KMnP/vpt ViT state dict")
        out[new], src[new] = value, key
    for (block, kind), parts in sorted(qkv.items()):
        names = [f"transformer.encoder.layer.{block}.attn.{p}.{kind}" for p in _QKV]
        missing = [n for n, p in zip(names, _QKV) if p not in parts]
        if missing:
            raise DasslLiteError(f"KMnP/vpt ViT state dict lacks {missing}")
        new = f"blocks.{block}.attn.qkv.{kind}"
        out[new] = torch.cat([parts[p] for p in _QKV])
        src[new] = f"transformer.encoder.layer.{block}.attn.{{query,key,value}}.{kind}"
    return out, src


def _kmnp_key(key: str):
    return _block_key(key, r"transformer\.encoder\.layer\.(\d+)\.(.+)$", _KMNP_BLOCK, _KMNP_TOP)
