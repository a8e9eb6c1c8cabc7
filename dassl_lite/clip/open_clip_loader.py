"""open_clip weights in dassl_lite's CLIP core: ``MODEL.BACKBONE.NAME open_clip:MODEL:PRETRAINED``.

``MODEL`` is an open_clip architecture name (``ViT-B-16``, ``ViT-B-16-quickgelu``, ``RN50``, or
one registered with ``open_clip.add_model_config``); ``PRETRAINED`` is an open_clip pretrained
tag (``laion2b_s34b_b88k``, ``datacomp_xl_s13b_b90k``, ...) or the path of an open_clip
checkpoint file (a plain state dict, or a training checkpoint with ``state_dict`` and DDP
``module.`` prefixes; ``.safetensors``, ``.bin``, ``.pt``, ``.pth``).

The architecture comes from open_clip's model config, the weights are loaded into
:class:`dassl_lite.clip.CLIP` (so every prompt learner works on them). Supported: towers with
OpenAI's layout (ViT with class-token pooling, or ModifiedResNet; a causal text transformer with
argmax/EOT pooling and a linear projection), QuickGELU or exact GELU, any head width. Anything
else (timm or Hugging Face towers, layer scale, attentional pooling, SigLIP's logit bias, ...)
is refused with an error naming the config entry. ``patch_dropout`` is ignored: it acts only
when open_clip trains the image tower, which prompt learning keeps frozen.

Activation: the model config's (``quick_gelu``), except for a tag open_clip marks as trained
with QuickGELU (``ViT-B-32:openai`` runs QuickGELU, as ``ViT-B-32-quickgelu:openai`` does; open_clip
itself would run GELU there and warn of the mismatch). A weights FILE runs the named config's
activation, as open_clip's ``create_model(MODEL, pretrained=FILE)`` does: OpenAI-trained weights
given as a file need the ``-quickgelu`` name (``open_clip:ViT-B-32-quickgelu:/path/file``); a
plain name of a model whose OpenAI weights use QuickGELU logs a warning that says so.

Tagged weights are looked up first at ``<cache>/open_clip/<MODEL>/<PRETRAINED>/`` (any
``.safetensors``/``.bin``/``.pt``/``.pth`` file there; ``<cache>`` as for OpenAI weights:
``MODEL.BACKBONE.CACHE_DIR``, ``$DASSL_LITE_CLIP_CACHE`` or ``~/.cache/clip``), then through
open_clip's own download and cache (Hugging Face hub cache, ``~/.cache/clip`` for URLs).
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from .errors import CLIPWeightsNotFoundError
from .model import CLIP, infer_config
from .transformer import use_exact_gelu

logger = logging.getLogger(__name__)

PREFIX = "open_clip:"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Config entries whose non-default values dassl_lite's CLIP core does not implement.
_VISION_DEFAULTS = dict(timm_model_name=None, ls_init_value=None, attentional_pool=False,
                        no_ln_pre=False, final_ln_after_pool=False, pool_type="tok",
                        pos_embed_type="learnable", mlp_ratio=4.0, act_kwargs=None,
                        norm_kwargs=None, qk_norm=False, scaled_cosine_attn=False,
                        scale_heads=False, scale_attn_inner=False, scale_attn=False,
                        scale_fc=False)
_TEXT_DEFAULTS = dict(hf_model_name=None, hf_tokenizer_name=None, tokenizer_mode=None,
                      ls_init_value=None, embed_cls=False, pad_id=0, no_causal_mask=False,
                      final_ln_after_pool=False, pool_type="argmax", proj_bias=False,
                      proj_type="linear", mlp_ratio=4.0, act_kwargs=None, norm_kwargs=None,
                      qk_norm=False, scaled_cosine_attn=False, scale_heads=False,
                      scale_attn_inner=False, scale_attn=False, scale_fc=False,
                      context_length=77, vocab_size=49408)
_TOP_DEFAULTS = dict(custom_text=False, init_logit_bias=None, multimodal_cfg=None)


class OpenCLIPUnsupportedError(ValueError):
    """The open_clip architecture uses a part dassl_lite's CLIP core does not implement."""


def is_open_clip_name(name: Union[str, Path]) -> bool:
    """True for ``open_clip:MODEL[:PRETRAINED]`` backbone names."""
    return str(name).startswith(PREFIX)


def parse_name(name: str) -> Tuple[str, str]:
    """``open_clip:MODEL:PRETRAINED`` -> (MODEL, PRETRAINED); PRETRAINED may hold ``:``."""
    model, _, pretrained = name[len(PREFIX):].partition(":")
    if not model or not pretrained:
        raise ValueError(f"open_clip backbone names are open_clip:MODEL:PRETRAINED (e.g. "
                         f"open_clip:ViT-B-16:laion2b_s34b_b88k, or a checkpoint file as "
                         f"PRETRAINED); got {name!r}")
    return model, pretrained


def _open_clip():
    try:
        import open_clip
    except ImportError as e:
        raise ImportError("open_clip backbones need the open_clip_torch package: "
                          "pip install open_clip_torch==3.3.0") from e
    return open_clip


def model_config(model: str) -> Dict:
    """open_clip's config dict of architecture ``model``; an error lists close names."""
    open_clip = _open_clip()
    cfg = open_clip.get_model_config(model)
    if cfg is None:
        close = difflib.get_close_matches(model, open_clip.list_models(), n=3)
        raise ValueError(f"open_clip has no model config {model!r}"
                         + (f"; did you mean {', '.join(close)}?" if close else "")
                         + " (open_clip.list_models() names them all; a custom JSON config is "
                           "registered with open_clip.add_model_config)")
    return cfg


def unsupported_parts(cfg: Mapping) -> List[str]:
    """``section.key=value`` for every config entry our CLIP core does not implement."""
    found = []
    sections = (("", cfg, _TOP_DEFAULTS), ("vision_cfg.", cfg.get("vision_cfg", {}),
                _VISION_DEFAULTS), ("text_cfg.", cfg.get("text_cfg", {}), _TEXT_DEFAULTS))
    for prefix, section, defaults in sections:
        for key, default in defaults.items():
            value = section.get(key, default)
            if value != default and value not in ({}, "default"):
                found.append(f"{prefix}{key}={value!r}")
    if cfg.get("vision_cfg", {}).get("block_type") not in (None, "default"):
        found.append(f"vision_cfg.block_type={cfg['vision_cfg']['block_type']!r}")
    if cfg.get("text_cfg", {}).get("block_type") not in (None, "default"):
        found.append(f"text_cfg.block_type={cfg['text_cfg']['block_type']!r}")
    size = cfg.get("vision_cfg", {}).get("image_size", 224)
    if isinstance(size, (list, tuple)) and len(set(size)) != 1:
        found.append(f"vision_cfg.image_size={size!r} (not square)")
    return found


def check_supported(model: str, cfg: Mapping) -> None:
    """Raise :class:`OpenCLIPUnsupportedError` naming every unsupported part of ``cfg``."""
    parts = unsupported_parts(cfg)
    if parts:
        raise OpenCLIPUnsupportedError(
            f"open_clip model {model!r} cannot be loaded into dassl_lite's CLIP core: it uses "
            f"{'; '.join(parts)}. Supported: OpenAI-layout towers (ViT with class-token pooling "
            f"or ModifiedResNet, causal text transformer with EOT pooling and a linear "
            f"projection), QuickGELU or GELU, any head width.")


def _weights_in(folder: Path) -> Optional[Path]:
    files = sorted(p for p in folder.glob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    return files[0] if files else None


def resolve_weights(model: str, pretrained: str, cache_dir: Path) -> Path:
    """The weights file for ``pretrained`` (a file path or an open_clip tag of ``model``)."""
    path = Path(pretrained).expanduser()
    if path.is_file():
        return path
    open_clip = _open_clip()
    pcfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not pcfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ValueError(f"{pretrained!r} is neither a file (looked for {path.resolve()}) nor an "
                         f"open_clip pretrained tag of {model!r} "
                         f"(tags: {', '.join(tags) or 'none'})")
    local = cache_dir / "open_clip" / model / pretrained
    found = _weights_in(local) if local.is_dir() else None
    if found is not None:
        return found
    source = pcfg.get("hf_hub") or pcfg.get("url") or "open_clip's registry"
    try:
        target = open_clip.download_pretrained(pcfg)
    except Exception as err:  # offline hub / URL errors come in many types
        target, reason = "", f"{type(err).__name__}: {err}"
    else:
        reason = "open_clip found no file"
    if target and Path(target).is_file():
        return Path(target)
    raise CLIPWeightsNotFoundError(
        f"open_clip weights {model}:{pretrained} are not in {local} nor in open_clip's cache, and "
        f"could not be downloaded from {source}. Download the weights file (.safetensors or "
        f".bin) on a machine with internet access and place it in {local}/, or give its path: "
        f"open_clip:{model}:/path/to/file. The download failed with: {reason.strip()}")


def read_weights(path: Path) -> Dict[str, Tensor]:
    """A state dict from an open_clip weights or training-checkpoint file (``module.`` and
    ``state_dict`` unwrapped), loaded on CPU without running pickled code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(str(path), device="cpu")
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{path} holds no open_clip state dict (got {type(obj).__name__})")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _heads(cfg: Mapping) -> Tuple[int, int]:
    """(vision heads, text heads) as open_clip computes them."""
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    width, head_width = vision.get("width", 768), vision.get("head_width", 64)
    vision_heads = (width * 32 if isinstance(vision.get("layers", 12), (list, tuple))
                    else width) // head_width
    return vision_heads, text.get("heads", 8)


def build_open_clip(cfg: Mapping, state_dict: Mapping[str, Tensor], model: str) -> CLIP:
    """A float32 :class:`CLIP` (eval mode) with open_clip's weights and activation."""
    sd = {k: v.to(torch.float32, copy=True) if v.is_floating_point() else v.clone()
          for k, v in state_dict.items() if k != "attn_mask"}
    try:
        config = infer_config(sd)
    except ValueError as e:
        raise OpenCLIPUnsupportedError(f"open_clip model {model!r}: {e}") from e
    vision_heads, text_heads = _heads(cfg)
    config = dataclasses.replace(config, vision_heads=vision_heads, transformer_heads=text_heads)
    with torch.device("meta"):
        clip = CLIP(config)
    if "logit_scale" in sd:
        sd["logit_scale"] = sd["logit_scale"].reshape(clip.logit_scale.shape)
    try:
        clip.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as err:
        raise OpenCLIPUnsupportedError(
            f"open_clip model {model!r}: its weights do not fit dassl_lite's CLIP {config}: "
            f"{err}") from err
    if not cfg.get("quick_gelu", False):
        use_exact_gelu(clip)  # open_clip's default; OpenAI's models use QuickGELU
    return clip.eval()


def quickgelu_tags(model: str) -> List[str]:
    """The pretrained tags of ``model`` that open_clip marks as trained with QuickGELU."""
    open_clip = _open_clip()
    return [t for t in open_clip.list_pretrained_tags_by_model(model)
            if open_clip.get_pretrained_cfg(model, t).get("quick_gelu", False)]


def warn_file_activation(model: str, pretrained: str) -> None:
    """A file given with a GELU name of a model whose OpenAI weights use QuickGELU: the file
    runs with exact GELU (as open_clip's ``create_model(model, pretrained=file)``), which is
    wrong for OpenAI weights; say which name runs QuickGELU."""
    tags = quickgelu_tags(model)
    if "openai" not in tags:
        return
    logger.warning(
        "open_clip:%s:%s: a weights file given with model name %s runs with exact GELU (as "
        "open_clip's create_model(%r, pretrained=<file>) does). %s's OpenAI weights (and its "
        "tags %s) were trained with QuickGELU: if the file holds them, name the model "
        "%s-quickgelu (open_clip:%s-quickgelu:%s); with GELU their features are wrong.",
        model, pretrained, model, model, model, ", ".join(tags), model, model, pretrained)


def load_open_clip(name: str, cache_dir: Path) -> Tuple[CLIP, Path]:
    """Load ``open_clip:MODEL:PRETRAINED`` into our CLIP; returns (model, weights file)."""
    model, pretrained = parse_name(name)
    cfg = model_config(model)
    check_supported(model, cfg)
    path = resolve_weights(model, pretrained, cache_dir)
    if not cfg.get("quick_gelu", False):
        if Path(pretrained).expanduser().is_file():
            warn_file_activation(model, pretrained)
        elif _open_clip().get_pretrained_cfg(model, pretrained).get("quick_gelu", False):
            logger.warning("open_clip tag %s:%s was trained with QuickGELU; using QuickGELU "
                           "(open_clip names this architecture %s-quickgelu)", model,
                           pretrained, model)
            cfg = dict(cfg, quick_gelu=True)
    clip = build_open_clip(cfg, read_weights(path), model)
    logger.info("Loaded open_clip %s (%s) from %s into dassl_lite's CLIP", model, pretrained, path)
    return clip, path
