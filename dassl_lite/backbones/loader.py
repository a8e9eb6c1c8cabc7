"""Find and load supervised ViT weights: by KMnP/vpt's feature name, the shipped toy model, or a
path to a Google ``.npz``, a timm/torchvision state dict (``.pth``/``.pt``/``.bin``) or a
``.safetensors`` file. Nothing is downloaded: a missing file is an error that names the file,
where to put it and where to get it.
"""
from __future__ import annotations

import contextlib
import difflib
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import torch
from torch import Tensor

from ..errors import DasslLiteError, load_error_reason
from .convert import HEAD_KEYS, detect_layout, from_google_npz, from_kmnp, from_torchvision
from .vit import ARCHS, PromptableViT, ViTArch, build_timm_vit

__all__ = ["MODEL_ZOO", "CACHE_ENV", "ASSETS_DIR", "ViTWeightsNotFoundError",
           "ViTWeightsFormatError", "resolve_vit_file",
           "read_vit_weights", "infer_arch", "load_supervised_vit"]

logger = logging.getLogger(__name__)

CACHE_ENV = "DASSL_LITE_VIT_CACHE"
ASSETS_DIR = Path(__file__).with_name("assets")
_GOOGLE = "https://storage.googleapis.com/vit_models/"
# KMnP/vpt's DATA.FEATURE names -> (architecture, file name in its MODEL_ROOT, where to get it).
MODEL_ZOO: Dict[str, Tuple[str, str, str]] = {
    "sup_vitb16_imagenet21k": ("ViT-B/16", "imagenet21k_ViT-B_16.npz",
                               _GOOGLE + "imagenet21k/ViT-B_16.npz"),
    "sup_vitb8_imagenet21k": ("ViT-B/8", "imagenet21k_ViT-B_8.npz",
                              _GOOGLE + "imagenet21k/ViT-B_8.npz"),
    "sup_vitb32_imagenet21k": ("ViT-B/32", "imagenet21k_ViT-B_32.npz",
                               _GOOGLE + "imagenet21k/ViT-B_32.npz"),
    "sup_vitl16_imagenet21k": ("ViT-L/16", "imagenet21k_ViT-L_16.npz",
                               _GOOGLE + "imagenet21k/ViT-L_16.npz"),
    "sup_vitl32_imagenet21k": ("ViT-L/32", "imagenet21k_ViT-L_32.npz",
                               _GOOGLE + "imagenet21k/ViT-L_32.npz"),
    "sup_vith14_imagenet21k": ("ViT-H/14", "imagenet21k_ViT-H_14.npz",
                               _GOOGLE + "imagenet21k/ViT-H_14.npz"),
    "sup_vitb16_224": ("ViT-B/16", "ViT-B_16-224.npz",
                       _GOOGLE + "imagenet21k+imagenet2012/ViT-B_16-224.npz"),
    "sup_vitl16_224": ("ViT-L/16", "ViT-L_16-224.npz",
                       _GOOGLE + "imagenet21k+imagenet2012/ViT-L_16-224.npz"),
    "ToyViT": ("ToyViT", "ToyViT.pt", "shipped; rebuild with python tools/pretrain_toy_vit.py"),
}
_SHIPPED = {"ToyViT"}


class ViTWeightsNotFoundError(DasslLiteError, FileNotFoundError):
    """A ViT checkpoint that is not on disk; the message says where to put it."""


def default_cache_dir(cache_dir: str = "") -> str:
    """``cache_dir``, else ``$DASSL_LITE_VIT_CACHE``, else ``~/.cache/dassl_lite/vit``."""
    return os.path.expanduser(cache_dir or os.environ.get(CACHE_ENV, "")
                              or os.path.join("~", ".cache", "dassl_lite", "vit"))


def resolve_vit_file(name: str, cache_dir: str = "") -> Tuple[str, Optional[ViTArch]]:
    """(path, architecture or None to infer) for a zoo name or a path."""
    if name in MODEL_ZOO:
        arch, filename, origin = MODEL_ZOO[name]
        folder = str(ASSETS_DIR) if name in _SHIPPED else default_cache_dir(cache_dir)
        path = os.path.join(folder, filename)
        if not os.path.isfile(path):
            raise ViTWeightsNotFoundError(
                f"ViT weights {name!r} not found: expected {path}. Download {origin} and save it "
                f"as {filename} in {folder} (MODEL.BACKBONE.CACHE_DIR or ${CACHE_ENV} choose the "
                f"folder), or set MODEL.BACKBONE.NAME to the path of the file")
        return path, ARCHS[arch]
    path = os.path.expanduser(name)
    if not os.path.isfile(path):
        close = difflib.get_close_matches(name, list(MODEL_ZOO), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ViTWeightsNotFoundError(
            f"ViT weights {name!r}: no such file, and not a known name.{hint} Known names: "
            f"{', '.join(MODEL_ZOO)}; or give the path of a Google .npz, a timm/torchvision state "
            f"dict or a .safetensors file")
    return path, None


NPZ_FORMAT = "a Google ViT .npz (named numeric arrays, as google-research/vision_transformer saves)"
SAFETENSORS_FORMAT = "a complete .safetensors file of tensors"
STATE_DICT_FORMAT = "a timm/torchvision state dict of tensors saved with torch.save (.pth/.pt/.bin)"


class ViTWeightsFormatError(DasslLiteError):
    """A ViT weights file that is unreadable, truncated or holds something other than tensors;
    nothing from it was run or loaded."""


def _bad_weights(path: str, reason: str, expected: str) -> ViTWeightsFormatError:
    return ViTWeightsFormatError(f"Cannot use ViT weights {path}: {reason}; expected {expected}")


def read_vit_weights(path: str) -> Tuple[Dict[str, Tensor], Dict[str, str], Optional[int]]:
    """(timm-layout state dict, timm key -> name in the file, attention heads when the file
    tells them (a Google .npz does; state dicts do not)) of a checkpoint file. Nothing in the file
    is unpickled beyond plain data (:class:`ViTWeightsFormatError` otherwise)."""
    if path.endswith(".npz"):
        arrays = _read_npz(path)
        query = arrays.get("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel")
        heads = int(query.shape[1]) if query is not None and query.ndim == 3 else None
        with _naming(path, NPZ_FORMAT):
            return (*from_google_npz(arrays), heads)
    if path.endswith(".safetensors"):
        state = _read_safetensors(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a refused global, a cut file, not a torch file
            raise _bad_weights(path, load_error_reason(e), STATE_DICT_FORMAT) from None
    state = _unwrap(state, path)
    with _naming(path, STATE_DICT_FORMAT):
        layout = detect_layout(state)
        if layout == "torchvision":
            return (*from_torchvision(state), None)
        if layout == "kmnp":
            return (*from_kmnp(state), None)
    return dict(state), {k: k for k in state}, None


@contextlib.contextmanager
def _naming(path: str, expected: str) -> Iterator[None]:
    """Errors of converting the tensors of ``path`` (a missing key, an array of the wrong rank)
    as :class:`ViTWeightsFormatError` naming the file."""
    try:
        yield
    except DasslLiteError as e:
        raise ViTWeightsFormatError(f"Cannot use ViT weights {path}: {e}") from None
    except (ValueError, RuntimeError, IndexError, TypeError) as e:
        raise _bad_weights(path, f"a tensor of unexpected shape ({type(e).__name__}: {e})",
                           expected) from None


def _read_npz(path: str) -> Dict[str, Any]:
    """The arrays of a ``.npz`` file, never unpickling anything."""
    import zipfile
    import zlib

    import numpy as np

    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {k: loaded[k] for k in loaded.files}
        reason = "it holds a single .npy array, not named arrays"
    except ValueError as e:
        if "Object arrays" in str(e):
            reason = ("it holds object arrays (pickled Python objects, never loaded: they could "
                      "run code)")
        elif "pickled" in str(e):
            reason = ("it is not a .npz archive (numpy would read it as a pickle, which could run "
                      "code)")
        else:
            reason = f"it is damaged ({e})"
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as e:
        reason = f"it is truncated or corrupt ({type(e).__name__}: {e})"
    raise _bad_weights(path, reason, NPZ_FORMAT)


def _read_safetensors(path: str) -> Dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise _bad_weights(path, f"it is truncated or corrupt (safetensors: {e})",
                           SAFETENSORS_FORMAT) from None


def _unwrap(state, path: str) -> Dict[str, Tensor]:
    """The tensor dict inside a checkpoint (``state_dict``/``model`` entries, ``module.``)."""
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise _bad_weights(path, f"it holds a {type(state).__name__}, not a state dict of tensors",
                           STATE_DICT_FORMAT)
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


def infer_arch(state: Mapping[str, Tensor], path: str, heads: Optional[int] = None) -> ViTArch:
    """The architecture of a timm-layout state dict. ``heads`` when known, else those of a known
    architecture of the same shape, else width / 64 (as in every released ViT)."""
    try:
        width, _, patch, _ = state["patch_embed.proj.weight"].shape
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        mlp = state["blocks.0.mlp.fc1.weight"].shape[0]
        tokens = state["pos_embed"].shape[1] - 1
    except (KeyError, ValueError) as e:
        raise DasslLiteError(f"cannot read the ViT architecture from {path}: {e}") from None
    grid = int(round(tokens ** 0.5))
    for arch in ARCHS.values():
        if (arch.patch_size, arch.width, arch.depth, arch.mlp_dim) == (patch, width, depth, mlp):
            heads = heads or arch.heads
    return ViTArch(patch, width, depth, heads or max(1, width // 64), mlp, grid * patch)


def load_supervised_vit(name: str, image_size: int, cache_dir: str = "") -> PromptableViT:
    """The ViT ``name`` (zoo name or path) for ``image_size`` inputs, weights loaded (the
    positional embedding resampled when the grid differs), in eval mode."""
    path, arch = resolve_vit_file(name, cache_dir)
    state, sources, heads = read_vit_weights(path)
    arch = arch or infer_arch(state, path, heads)
    vit = build_timm_vit(arch, image_size)
    dropped = sorted(k for k in state if k.startswith(HEAD_KEYS))
    state = {k: v for k, v in state.items() if k not in dropped}
    if dropped:
        logger.info("%s: ignoring the pretraining classifier %s", path, dropped)
    state["pos_embed"] = _resample_pos_embed(state, vit, sources)
    check_state_dict(state, vit.state_dict(), sources, path, name)
    vit.load_state_dict({k: v.float() for k, v in state.items()})
    logger.info("Loaded ViT %s (%s, patch %d, width %d, depth %d) from %s at %d px",
                name, type(vit).__name__, arch.patch_size, arch.width, arch.depth, path, image_size)
    return PromptableViT(vit, arch, name=os.path.basename(name)).eval()


def _resample_pos_embed(state, vit, sources) -> Tensor:
    pos = state.get("pos_embed")
    target = vit.pos_embed.shape
    if pos is None or pos.shape == target or pos.dim() != 3 or pos.shape[-1] != target[-1]:
        return pos  # missing or a wrong width: check_state_dict names it
    from timm.layers import resample_abs_pos_embed

    old, new = int(round((pos.shape[1] - 1) ** 0.5)), int(round((target[1] - 1) ** 0.5))
    logger.info("Resampling the positional embedding (%s) from a %dx%d to a %dx%d grid",
                sources.get("pos_embed", "pos_embed"), old, old, new, new)
    return resample_abs_pos_embed(pos.float(), new_size=(new, new), num_prefix_tokens=1)


def check_state_dict(state: Mapping[str, Tensor], expected: Mapping[str, Tensor],
                     sources: Mapping[str, str], path: str, name: str) -> None:
    """DasslLiteError naming missing/unexpected keys, or a tensor whose shape differs (both
    shapes, and the tensor's name in the file)."""
    missing = [k for k in expected if k not in state]
    unexpected = [sources.get(k, k) for k in state if k not in expected]
    if missing or unexpected:
        raise DasslLiteError(f"{path} does not fit the ViT {name!r}: missing {missing[:8]}"
                             f"{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}")
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise DasslLiteError(
                f"{path}: {sources.get(key, key)!r} has shape {tuple(state[key].shape)} but the "
                f"ViT {name!r} expects {tuple(ref.shape)} for {key!r} (a checkpoint of another "
                f"architecture?)")
