"""KMnP/vpt compatibility for :mod:`trainers.vpt_supervised`: the transfer types it refuses, the
checks of its prompt ablation keys, class-embedding prompt initialisation
(``MODEL.PROMPT.INITIATION`` ``final-cls`` / ``cls-*``) and the checkpoint layouts KMnP/vpt
writes.

**Checkpoints.** KMnP/vpt's trainer saves with fvcore's ``Checkpointer(model, save_dir)``:
``<OUTPUT_DIR>/<name>.pth`` holding ``{"model": ViT.state_dict()}`` (plus a text file
``last_checkpoint`` naming ``<name>.pth``); keys under DistributedDataParallel carry ``module.``.
Its ``ViT`` model registers the encoder as ``enc`` and the head as ``head``, so the learned
tensors are

=================================================  ===================  =======================
KMnP/vpt key                                        shape                 dassl_lite key
=================================================  ===================  =======================
``enc.transformer.prompt_embeddings``               [1, n, d]             ``prompts.ctx`` [n, d]
``enc.transformer.deep_prompt_embeddings``          [k, n, d]             ``prompts.deep``
``enc.transformer.prompt_proj.{weight,bias}``       [D, d], [D]           ``prompts.proj.*``
``head.projection.<i>.*`` (MLP_NUM > 0)             Linear / BatchNorm1d  ``head.projection.<i>.*``
``head.last_layer.{weight,bias}``                   [C, D], [C]           same
=================================================  ===================  =======================

(d = D, or ``PROJECT``; k = L-1, ``NUM_DEEP_LAYERS`` - 1, or ``NUM_DEEP_LAYERS`` under
``REVERSE_DEEP``). The other ``enc.*`` keys are the backbone: for ``end2end`` converted from
KMnP's module layout (:func:`dassl_lite.backbones.convert.from_kmnp`) to ``backbone.vit.*``,
otherwise frozen (dropped, counted in the log);
under ``DEEP_SHARED`` KMnP still creates (and saves) a ``deep_prompt_embeddings`` that its forward
never reads: dropped too. KMnP's ``SAVE_FOR_EACH_EPOCH`` files ``prompt_ep<N>.pth``
(``{"shallow_prompt", "deep_prompt"}`` NumPy arrays) hold no head and are refused by name.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from dassl_lite.backbones.convert import from_kmnp
from dassl_lite.config import ConfigError
from dassl_lite.engine import CheckpointError
from dassl_lite.errors import DasslLiteError

logger = logging.getLogger(__name__)

# KMnP/vpt's other MODEL.TRANSFER_TYPE values (src/models/vit_models.py) and why they are refused.
UNSUPPORTED_TRANSFER = {
    "partial-1": "fine-tuning the last block (+ final norm) only is a baseline not built here",
    "partial-2": "fine-tuning the last 2 blocks (+ final norm) only is a baseline not built here",
    "partial-4": "fine-tuning the last 4 blocks (+ final norm) only is a baseline not built here",
    "tinytl-bias": "bias-only tuning (TinyTL) is a baseline not built here",
    "prompt+bias": "prompts plus the backbone's biases is an ablation not built here",
    "prompt-noupdate": "prompts frozen at their random init is an ablation not built here",
    "cls": "tuning the backbone's class token is an ablation not built here",
    "cls-reinit": "re-initialising and tuning the class token is an ablation not built here",
    "cls+prompt": "tuning the class token with prompts is an ablation not built here",
    "cls-reinit+prompt": "re-initialising the class token with prompts is an ablation not "
                         "built here",
    "adapter": "KMnP's adapter blocks (MODEL.ADAPTER) are not built here",
    "side": "side-tuning needs an ImageNet AlexNet that torchvision downloads (dassl_lite never "
            "downloads weights)",
}
CLS_INITS = ("final-cls", "cls-nolastl", "cls-nofirstl")
# KMnP key prefix -> ours, for the learned tensors (module docstring).
KMNP_SHALLOW = "enc.transformer.prompt_embeddings"
KMNP_DEEP = "enc.transformer.deep_prompt_embeddings"
KMNP_RENAMES = (("enc.transformer.prompt_proj.", "prompts.proj."), ("head.", "head."))
KMNP_PROMPT_FILE_KEYS = {"shallow_prompt", "deep_prompt"}
FVCORE_POINTER = "last_checkpoint"  # KMnP/vpt's Checkpointer names its latest file here


def check_prompt_options(p, transfer: str) -> None:
    """MODEL.PROMPT's KMnP/vpt ablation keys: each one only where KMnP's code reads it
    (ConfigError naming the key otherwise)."""
    set_keys = [k for k, on in (("NUM_DEEP_LAYERS", p.NUM_DEEP_LAYERS is not None),
                                ("REVERSE_DEEP", p.REVERSE_DEEP),
                                ("DEEP_SHARED", p.DEEP_SHARED),
                                ("VIT_POOL_TYPE", p.VIT_POOL_TYPE != "original"),
                                ("INITIATION", p.INITIATION != "random")) if on]
    if transfer != "prompt" and set_keys:
        raise ConfigError(f"MODEL.PROMPT.{set_keys[0]} applies only with MODEL.TRANSFER_TYPE "
                          f"prompt (KMnP/vpt's {transfer} model has no prompts and reads "
                          f"the class token)")
    if p.FORWARD_DEEP_NOEXPAND:
        raise ConfigError("MODEL.PROMPT.FORWARD_DEEP_NOEXPAND is not supported: dropping the "
                          "prompt tokens after the last prompted layer is a KMnP/vpt ablation "
                          "not built here")
    if p.NUM_DEEP_LAYERS is not None and (not isinstance(p.NUM_DEEP_LAYERS, int)
                                          or p.NUM_DEEP_LAYERS < 1):
        raise ConfigError(f"MODEL.PROMPT.NUM_DEEP_LAYERS must be None (all layers) or an int "
                          f">= 1; got {p.NUM_DEEP_LAYERS!r}")
    for key in ("NUM_DEEP_LAYERS", "REVERSE_DEEP", "DEEP_SHARED"):
        if key in set_keys and not p.DEEP:
            raise ConfigError(f"MODEL.PROMPT.{key} needs MODEL.PROMPT.DEEP True (KMnP/vpt "
                              f"reads it only for deep prompts)")
    if p.REVERSE_DEEP and p.NUM_DEEP_LAYERS is None:
        raise ConfigError("MODEL.PROMPT.REVERSE_DEEP needs MODEL.PROMPT.NUM_DEEP_LAYERS (the "
                          "number of last layers that get prompts)")
    if p.REVERSE_DEEP and p.DEEP_SHARED:
        raise ConfigError("MODEL.PROMPT.DEEP_SHARED is not supported with REVERSE_DEEP: "
                          "KMnP/vpt's reverse forward ignores DEEP_SHARED")
    _check_clsemb(p)


def _check_clsemb(p) -> None:
    """The class-embedding INITIATION keys (CLSEMB_PATH only where it is read)."""
    if p.INITIATION == "random":
        for key in ("CLSEMB_PATH", "CLSEMB_FOLDER"):
            if p[key]:
                raise ConfigError(f"MODEL.PROMPT.{key} is read only with INITIATION "
                                  f"{', '.join(CLS_INITS)}; INITIATION is random")
        return
    if not p.CLSEMB_PATH:
        raise ConfigError(f"MODEL.PROMPT.INITIATION {p.INITIATION} needs "
                          f"MODEL.PROMPT.CLSEMB_PATH (a .npy of class embeddings [n, L+1, D])")
    if p.PROJECT != -1:
        raise ConfigError(f"MODEL.PROMPT.INITIATION {p.INITIATION} is not supported with "
                          f"PROJECT {p.PROJECT}: class embeddings have the ViT width")
    if p.NUM_DEEP_LAYERS is not None or p.REVERSE_DEEP:
        raise ConfigError(f"MODEL.PROMPT.INITIATION {p.INITIATION} needs NUM_DEEP_LAYERS None "
                          f"and REVERSE_DEEP False (one embedding per layer, as KMnP/vpt "
                          f"asserts)")


def clsemb_path(folder: str, path: str) -> str:
    """``CLSEMB_PATH``, joined to ``CLSEMB_FOLDER`` when relative and a folder is given."""
    return os.path.join(folder, path) if folder and not os.path.isabs(path) else path


def load_cls_embeddings(path: str, initiation: str, num_tokens: int, depth: int,
                        width: int) -> Tuple[Tensor, Tensor]:
    """(ctx [n, D], deep [depth-1, n, D]) from a class-embedding ``.npy`` of shape
    [n, T, D] (n = NUM_TOKENS aggregated class-token embeddings at the T = depth + 1 points of the
    ViT: the input of block 0 and the output of each block), as KMnP/vpt slices it:
    ``final-cls`` the last point for every layer, ``cls-nolastl`` points 0..depth-1 (layer i gets
    point i), ``cls-nofirstl`` points 1..depth. Read without pickle; any other content, shape or
    a non-finite value is a ConfigError naming the file and the expected shape."""
    key = f"MODEL.PROMPT.CLSEMB_PATH {path!r}"
    points = "T >= 1" if initiation == "final-cls" else f"T = {depth + 1}"
    expected = f"[NUM_TOKENS={num_tokens}, T, {width}] with {points}"
    if not os.path.isfile(path):
        raise ConfigError(f"{key}: no such file (INITIATION {initiation} reads a .npy of shape "
                          f"{expected})")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ConfigError(f"{key} is not a plain NumPy .npy array ({e}); expected shape "
                          f"{expected}") from e
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise ConfigError(f"{key} must hold one numeric .npy array of shape {expected}; got "
                          f"{type(array).__name__} {getattr(array, 'dtype', '')}")
    t_ok = array.ndim == 3 and (array.shape[1] >= 1 if initiation == "final-cls"
                                else array.shape[1] == depth + 1)
    if not (t_ok and array.shape[0] == num_tokens and array.shape[2] == width):
        raise ConfigError(f"{key} has shape {list(array.shape)}; INITIATION {initiation} "
                          f"expects {expected}")
    if not np.isfinite(array).all():
        raise ConfigError(f"{key} holds non-finite values (NaN or inf)")
    emb = torch.from_numpy(array.astype(np.float32))
    if initiation == "final-cls":
        last = emb[:, -1]
        return last.clone(), last.expand(depth - 1, -1, -1).clone()
    layers = (emb[:, :-1] if initiation == "cls-nolastl" else emb[:, 1:]).transpose(0, 1)
    return layers[0].clone(), layers[1:].clone()


def is_kmnp_layout(state_dict: Dict[str, object]) -> bool:
    """Whether a loaded checkpoint is KMnP/vpt's (fvcore ``{"model": ...}`` or its keys)."""
    if isinstance(state_dict.get("model"), dict):
        return True
    keys = set(state_dict)
    return bool(keys & KMNP_PROMPT_FILE_KEYS) or any(k.startswith("enc.") for k in keys)


def remap_kmnp(state_dict: Dict[str, object], expected: Dict[str, Tensor], shared: bool,
               end2end: bool) -> Dict[str, Tensor]:
    """Our learner's keys for a KMnP/vpt checkpoint (module docstring); ``expected``: the
    learner's trainable state (for the prompt shapes). Unknown keys stay, so the loader names
    them; a prompt of the wrong shape names KMnP's key and the shape expected there."""
    state = state_dict["model"] if isinstance(state_dict.get("model"), dict) else state_dict
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}
    if set(state) & KMNP_PROMPT_FILE_KEYS:
        raise CheckpointError(
            f"this is KMnP/vpt's per-epoch prompt file (keys {sorted(state)}, written by "
            f"MODEL.PROMPT.SAVE_FOR_EACH_EPOCH): it holds no head; load the Checkpointer file "
            f"(<OUTPUT_DIR>/<name>.pth with {{'model': ...}}) instead")
    out: Dict[str, Tensor] = {}
    if end2end:  # the backbone is learned: KMnP's encoder layout -> timm's, under backbone.vit.
        enc = {k[4:]: v for k, v in state.items() if k.startswith("enc.")}
        try:
            converted, _ = from_kmnp(enc)
        except DasslLiteError as e:
            raise CheckpointError(f"the end2end checkpoint's encoder (enc.*): {e}") from None
        out.update((f"backbone.vit.{k}", v) for k, v in converted.items())
        state = {k: v for k, v in state.items() if not k.startswith("enc.")}
    dropped = 0
    for key, value in state.items():
        if key == KMNP_SHALLOW:
            out["prompts.ctx"] = _prompt(key, value, expected.get("prompts.ctx"), batched=True)
        elif key == KMNP_DEEP and (shared or value.numel() == 0):
            dropped += 1  # KMnP's unused tensor under DEEP_SHARED, or its empty one for k = 1
        elif key == KMNP_DEEP:
            out["prompts.deep"] = _prompt(key, value, expected.get("prompts.deep"), batched=False)
        elif (new := _rename(key)) is not None:
            out[new] = value
        elif key.startswith("enc."):
            dropped += 1
        else:
            out[key] = value
    logger.info(f"KMnP/vpt checkpoint layout: using {sorted(out)}; ignoring {dropped} frozen "
                f"backbone (or unused) keys")
    return out


def _rename(key: str) -> Optional[str]:
    for old, new in KMNP_RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def _prompt(key: str, value: Tensor, ours: Optional[Tensor], batched: bool) -> Tensor:
    """KMnP's prompt tensor as ours ([1, n, d] -> [n, d] when ``batched``), shape-checked."""
    if ours is None:
        raise CheckpointError(f"checkpoint key {key!r} has no counterpart in this model "
                              f"(check MODEL.PROMPT.DEEP / NUM_DEEP_LAYERS / REVERSE_DEEP / "
                              f"TRANSFER_TYPE)")
    want = (1, *ours.shape) if batched else tuple(ours.shape)
    if tuple(value.shape) != want:
        raise CheckpointError(f"checkpoint key {key!r} has shape {tuple(value.shape)}; this "
                              f"model expects {want} (NUM_TOKENS, prompt layers, PROJECT or "
                              f"width differ)")
    return value[0] if batched else value


def kmnp_checkpoint_file(directory: str, model_name: str) -> Optional[str]:
    """The KMnP/vpt file ``directory`` points at (a file, or a folder with fvcore's
    ``last_checkpoint`` and no ``model_name`` subfolder of ours); None for our layout."""
    if os.path.isfile(directory):
        return directory
    pointer = os.path.join(directory, FVCORE_POINTER)
    if os.path.isdir(os.path.join(directory, model_name)) or not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        name = f.readline().strip()
    path = os.path.join(directory, name)
    if not name or not os.path.isfile(path):
        raise CheckpointError(f"{pointer!r} (KMnP/vpt's Checkpointer pointer) names {name!r}, "
                              f"but {path!r} does not exist")
    return path
