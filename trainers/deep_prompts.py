"""Building blocks shared by the deep (multi-layer) prompt trainers: MaPLe, IVLP, VPT, VPTDeep.

- :class:`DeepTextPromptLearner`: CoOp's text prompt (``trainers.prompting.PromptLearner``) with
  MaPLe/IVLP's context initialisation and, for depth J, J-1 deeper text prompts stored as ONE
  parameter ``[J-1, n_ctx, width]`` (upstream's ``nn.ParameterList`` is empty in
  DataParallel replicas on older torch; a plain parameter is replicated like any other).
- :class:`VisionPrompts`: shallow + deep visual prompt tokens, optionally projected and dropped out.
- :class:`DeepPromptedCLIP`: a frozen CLIP driven by a learner that provides
  ``vision_inputs(batch)`` (keyword arguments of ``clip.visual``) and either ``text_inputs()`` or
  fixed class text features.
- :class:`UpstreamLayout`: maps the keys of upstream multimodal-prompt-learning checkpoints (whole
  ``CustomCLIP`` state dicts) to the keys of our trainable module.
- :class:`DeepPromptTrainer`: the trainer base (depth checks, fixed text, upstream checkpoints).

The CLIP core does the numerics (``dassl_lite.clip``): text deep prompt k replaces positions
``[1 : 1 + n_ctx]`` at the input of layer k+1; vision prompts are appended after [CLS, patches]
and deep prompt k replaces them at the input of layer k+1 (see ``VisionTransformer``).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from dassl_lite.clip import CLIP, VisionTransformer
from dassl_lite.config import ConfigError
from dassl_lite.engine import CheckpointError

from .clip_trainer import ClipPromptTrainer
from .prompting import PromptedCLIP, PromptLearner, init_context_embeddings
from .zsclip import ZeroshotCLIPModel

logger = logging.getLogger(__name__)

# Upstream MaPLe/IVLP initialise the context from CTX_INIT only when N_CTX is at most this.
MAX_INIT_CTX = 4


def normal_prompts(*shape: int) -> Tensor:
    """Prompt tokens drawn from N(0, 0.02) (upstream MaPLe/IVLP/VPT initialisation)."""
    return nn.init.normal_(torch.empty(*shape), std=0.02)


def stacked_prompts(count: int, n_ctx: int, width: int,
                    init: Callable[..., Tensor] = normal_prompts) -> Optional[nn.Parameter]:
    """``count`` prompt sets as one parameter [count, n_ctx, width]; None when ``count`` is 0."""
    return nn.Parameter(init(count, n_ctx, width)) if count > 0 else None


class DeepTextPromptLearner(PromptLearner):
    """Text prompt ``SOS + ctx + <rest of CTX_INIT> + <name> + "." + EOS`` plus deep text prompts.

    Context initialisation follows upstream MaPLe/IVLP: when ``ctx_init`` is given and ``n_ctx`` is
    at most 4, the context is the embedding of the first ``n_ctx`` tokens of ``ctx_init`` and the
    remaining words stay in the prompt as fixed tokens (``N_CTX`` 2 with "a photo of a" learns "a
    photo" and keeps "of a"); otherwise N(0, 0.02) with "X" placeholders. ``n_ctx`` is always the
    configured value and counts BPE tokens, not words (upstream MaPLe/IVLP take
    ``embedding[0, 1:1 + n_ctx]``): ``N_CTX`` 2 with "an x-ray of the" learns "an" "x" and keeps
    "- ray of the" fixed (logged once). CoOp instead takes one vector per word of ``ctx_init``.

    ``depth`` J >= 1: J-1 deep prompts [J-1, n_ctx, width] (N(0, 0.02)) registered under
    ``deep_name``; entry k enters text layer k+1.
    """

    def __init__(self, clip_model: CLIP, classnames: Sequence[str], n_ctx: int, ctx_init: str,
                 depth: int, deep_name: str = "deep"):
        super().__init__(clip_model, classnames, n_ctx=n_ctx, ctx_init=ctx_init)
        self.deep_name = deep_name
        width = self.ctx.shape[-1]
        self.register_parameter(deep_name, stacked_prompts(depth - 1, self.n_ctx, width))

    def init_context(self, clip_model: CLIP, n_ctx: int, ctx_init: str,
                     csc: bool) -> Tuple[Tensor, str]:
        if not ctx_init or n_ctx > MAX_INIT_CTX:
            return super().init_context(clip_model, n_ctx, "", csc)
        return init_context_embeddings(clip_model, ctx_init, n_ctx), ctx_init

    def deep_text_prompts(self) -> List[Tensor]:
        """The deep text prompts, one [n_ctx, width] tensor per layer from layer 1 on."""
        deep = getattr(self, self.deep_name)
        return [] if deep is None else list(deep.unbind(0))

    def text_inputs(self) -> Tuple[Tensor, Tensor, List[Tensor]]:
        """(prompt embeddings [n_cls, L, width], EOT positions, deep text prompts)."""
        return self(), self.eot_idx, self.deep_text_prompts()


class VisionPrompts(nn.Module):
    """Visual prompt tokens for ``depth`` layers of a ViT.

    ``ctx`` [n_ctx, prompt_dim] enters with the patch tokens; ``deep`` [depth-1, n_ctx, prompt_dim]
    (None for depth 1) replaces them at the input of layers 1 .. depth-1. ``shared``: no ``deep``;
    ``ctx`` itself re-enters at layers 1 .. depth-1 (KMnP/vpt's ``DEEP_SHARED``: one set).
    ``start`` not None (KMnP/vpt's ``REVERSE_DEEP``): no ``ctx``; ``deep`` [depth, n_ctx,
    prompt_dim] enters at layers start .. start+depth-1. ``proj`` (optional) maps prompt_dim to
    the ViT width; ``dropout`` (rate > 0, training only) drops prompt values independently for
    each image and each layer, as the VPT paper does.
    """

    def __init__(self, n_ctx: int, depth: int, width: int, proj: Optional[nn.Module] = None,
                 dropout: float = 0.0, init: Callable[..., Tensor] = normal_prompts,
                 shared: bool = False, start: Optional[int] = None):
        super().__init__()
        if start is not None and shared:
            raise ValueError("shared prompts need the layer-0 set (start None)")
        prompt_dim = proj.in_features if proj is not None else width
        self.n_ctx = n_ctx
        self.depth = depth
        self.shared = shared
        self.start = start
        self.ctx = nn.Parameter(init(n_ctx, prompt_dim)) if start is None else None
        deep = depth if start is not None else (0 if shared else depth - 1)
        self.register_parameter("deep", stacked_prompts(deep, n_ctx, prompt_dim, init))
        self.proj = proj
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def tokens(self, prompts: Tensor, batch: int) -> Tensor:
        """``prompts`` [n_ctx, prompt_dim] as the ViT takes them: [n_ctx, width] or, under
        dropout in training, [batch, n_ctx, width]."""
        if self.proj is not None:
            prompts = self.proj(prompts)
        if self.dropout is not None and self.training:
            prompts = self.dropout(prompts.expand(batch, -1, -1))
        return prompts

    def vision_inputs(self, batch: int) -> Dict[str, object]:
        """Keyword arguments of ``clip.visual`` (or a supervised ``PromptableViT``, which alone
        takes the ``deep_start`` of a ``start``) for a batch of ``batch`` images."""
        if self.shared:
            deep = [self.tokens(self.ctx, batch) for _ in range(self.depth - 1)]
        else:
            deep = [] if self.deep is None else [self.tokens(p, batch) for p in self.deep]
        if self.start is not None:
            return {"prompts": None, "deep_prompts": deep, "deep_start": self.start}
        return {"prompts": self.tokens(self.ctx, batch), "deep_prompts": deep}


def fixed_text_features(clip_model: CLIP, classnames: Sequence[str], ctx_init: str) -> Tensor:
    """Normalised features [n_cls, E] of the hand-crafted prompts ``"<ctx_init> <name>."``."""
    prefix = ctx_init.replace("_", " ").strip().replace("{", "{{").replace("}", "}}")
    template = f"{prefix} {{}}." if prefix else "{}."
    return ZeroshotCLIPModel(clip_model, classnames, [template]).fixed_text_features


class DeepPromptedCLIP(PromptedCLIP):
    """A frozen CLIP with prompts in one or both encoders.

    ``prompt_learner.vision_inputs(batch)`` gives the keyword arguments of ``clip.visual``
    (empty: no vision prompts). Class text features are ``fixed_text`` when given (computed once
    by the trainer), else encoded from ``prompt_learner.text_inputs()``.
    """

    def __init__(self, clip_model: CLIP, prompt_learner: nn.Module,
                 fixed_text: Optional[Tensor] = None):
        super().__init__(clip_model)
        self.prompt_learner = prompt_learner
        self.register_buffer("fixed_text_features", fixed_text, persistent=False)

    def text_features(self) -> Tensor:
        if self.fixed_text_features is not None:
            return self.fixed_text_features
        prompts, eot_idx, deep = self.prompt_learner.text_inputs()
        return self.encode_text(prompts, eot_idx, deep)

    def image_features(self, images: Tensor) -> Tensor:
        """Normalised features of ``images`` encoded with the learner's vision prompts."""
        return self.encode_image(images, **self.prompt_learner.vision_inputs(images.shape[0]))

    def forward(self, images: Tensor) -> Tensor:
        text = self.text_cache if self.text_cache is not None else self.text_features()
        return self.logits(self.image_features(images), text)


@dataclass(frozen=True)
class UpstreamLayout:
    """How a checkpoint of upstream multimodal-prompt-learning maps onto our trainable module.

    Upstream registers the whole ``CustomCLIP``, so its files hold the learned tensors among the
    frozen CLIP weights. ``stacks``: (key pattern with ``{i}``, first index, our key) — numbered
    upstream tensors stacked into one of our parameters. ``renames``: (upstream key or prefix
    ending in ".", ours). ``frozen``: prefixes of upstream keys that are not learned (dropped).
    A file is in upstream layout when a key starts with one of ``markers``.
    """

    stacks: Tuple[Tuple[str, int, str], ...] = ()
    renames: Tuple[Tuple[str, str], ...] = ()
    frozen: Tuple[str, ...] = ("image_encoder.", "text_encoder.", "logit_scale",
                               "prompt_learner.token_prefix", "prompt_learner.token_suffix")
    markers: Tuple[str, ...] = ("prompt_learner.", "image_encoder.", "text_encoder.", "logit_scale")

    def matches(self, state_dict: Dict[str, Tensor]) -> bool:
        return any(k.startswith(self.markers) for k in state_dict)

    def remap(self, state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Our keys for an upstream state dict (frozen CLIP keys dropped; unknown keys kept,
        so that the loader names them)."""
        state = dict(state_dict)
        out: Dict[str, Tensor] = {}
        for pattern, start, target in self.stacks:
            stacked = _pop_stack(state, pattern, start)
            if stacked is not None:
                out[target] = stacked
        dropped = 0
        for key, value in state.items():
            new = self._rename(key)
            if new is not None:
                out[new] = value
            elif key.startswith(self.frozen):
                dropped += 1
            else:
                out[key] = value
        logger.info(f"Upstream checkpoint layout: using {sorted(out)}; ignoring {dropped} "
                    f"frozen CLIP/token keys")
        return out

    def _rename(self, key: str) -> Optional[str]:
        for old, new in self.renames:
            if key == old or (old.endswith(".") and key.startswith(old)):
                return new + key[len(old):]
        return None


def _pop_stack(state: Dict[str, Tensor], pattern: str, start: int) -> Optional[Tensor]:
    """Remove the keys ``pattern.format(i=...)`` from ``state`` and stack them in index order;
    gaps in the numbering are an error naming the missing keys."""
    regex = re.compile(re.escape(pattern).replace(re.escape("{i}"), r"(\d+)") + "$")
    found = {int(m.group(1)): k for k in state for m in [regex.match(k)] if m}
    if not found:
        return None
    expected = range(start, max(found) + 1)
    missing = [pattern.format(i=i) for i in expected if i not in found]
    if missing:
        raise CheckpointError(f"Upstream checkpoint is missing trainable keys {missing} (it has "
                              f"{[found[i] for i in sorted(found)]})")
    return torch.stack([state.pop(found[i]) for i in expected])


def vit_layers(clip_model: CLIP, trainer: str, backbone: str) -> int:
    """The number of layers of the ViT image encoder; ConfigError for a ResNet backbone."""
    if not isinstance(clip_model.visual, VisionTransformer):
        raise ConfigError(f"{trainer} puts prompts into the image encoder and needs a ViT "
                          f"backbone (e.g. ViT-B/16); {backbone!r} has a ResNet image encoder")
    return clip_model.visual.layers


def check_depth(key: str, depth: int, layers: int, encoder: str, low: int = 1) -> None:
    """ConfigError unless ``low <= depth <= layers`` (a prompt depth within the encoder)."""
    if depth < low:
        raise ConfigError(f"{key} must be >= {low}; got {depth}")
    if depth > layers:
        raise ConfigError(f"{key}={depth} exceeds the {layers} layers of the backbone's "
                          f"{encoder}; use at most {layers}")


class DeepPromptTrainer(ClipPromptTrainer):
    """Base of the deep prompt trainers: ``upstream_layout`` makes ``--model-dir`` accept
    upstream checkpoints; :meth:`fixed_text` gives hand-crafted class text features."""

    upstream_layout: Optional[UpstreamLayout] = None

    def fixed_text(self, clip_model: CLIP, classnames: Sequence[str]) -> Tensor:
        """Class text features of ``"<CTX_INIT> <name>."``, encoded once."""
        with torch.no_grad(), self.precision.autocast():
            return fixed_text_features(clip_model, classnames, self.section.CTX_INIT)

    def remap_checkpoint_state(self, name: str,
                               state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        if self.upstream_layout is not None and self.upstream_layout.matches(state_dict):
            state_dict = self.upstream_layout.remap(state_dict)
        return super().remap_checkpoint_state(name, state_dict)
