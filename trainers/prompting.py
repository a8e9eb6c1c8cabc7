"""Text-prompt building blocks shared by the CLIP trainers (ZeroshotCLIP, CoOp, CoCoOp, ...).

- :func:`load_frozen_clip`: the backbone named by ``MODEL.BACKBONE.NAME``, frozen, in the
  precision's dtype, its input resolution checked against ``INPUT.SIZE``.
- :class:`PromptLearner`: learnable context vectors spliced into the token embeddings of
  ``"X X ... X <class name>."`` (CoOp's prompt), with the class token at the end, middle or front.
  The fixed token parts are non-persistent buffers, so checkpoints hold only what is learned.
- :class:`PromptedCLIP`: a frozen CLIP plus what a method learns; normalised image/text features,
  chunked text encoding, logits, and a text-feature cache used during evaluation.

Token sequences are cut after the longest EOT position of the class prompts when they are built
(CLIP's text transformer is causal, so nothing after an EOT influences its feature): prompts are
~10-20 tokens long instead of 77, which is what makes batched CoCoOp and 1000-class CoOp cheap.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from dassl_lite.clip import CLIP, default_tokenizer, load_clip, tokenize
from dassl_lite.config import ConfigError
from dassl_lite.errors import DasslLiteError

logger = logging.getLogger(__name__)

# Prompts per text-encoder call: bounds peak memory when B x C prompts are encoded (CoCoOp).
TEXT_CHUNK = 4096
CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


class _Counter:
    count = 0


IMAGES_ENCODED = _Counter()  # images through a CLIP image encoder in this process (benchmarks)


def prompt_classnames(classnames: Sequence[str]) -> List[str]:
    """Class names as they enter prompts: underscores become spaces (upstream's rule)."""
    return [name.replace("_", " ") for name in classnames]


def check_input_size(cfg, clip_model: CLIP) -> None:
    """Raise ConfigError unless ``INPUT.SIZE`` equals the backbone's input resolution."""
    res = clip_model.visual.input_resolution
    size = tuple(int(s) for s in cfg.INPUT.SIZE)
    if size != (res, res):
        raise ConfigError(
            f"INPUT.SIZE {size} does not match the input resolution of backbone "
            f"{cfg.MODEL.BACKBONE.NAME!r} ({res}, {res}); set INPUT.SIZE ({res}, {res})"
        )


def load_frozen_clip(cfg, model_dtype: torch.dtype, device: torch.device,
                     check_size: bool = True) -> CLIP:
    """Load ``MODEL.BACKBONE.NAME`` onto ``device`` with frozen weights in ``model_dtype``.

    ``check_size``: require ``INPUT.SIZE`` to equal the backbone's input resolution (dense
    methods that interpolate the positional embedding pass False)."""
    name = cfg.MODEL.BACKBONE.NAME
    if not name:
        raise ConfigError("MODEL.BACKBONE.NAME is empty; give a CLIP name (ViT-B/16, RN50, "
                          "ToyCLIP, ...) or the path of an OpenAI-format checkpoint")
    try:
        clip_model = load_clip(name, device=device, precision=_DTYPE_NAMES[model_dtype],
                               cache_dir=cfg.MODEL.BACKBONE.CACHE_DIR or None)
    except (FileNotFoundError, ValueError) as e:
        raise DasslLiteError(f"Cannot load backbone MODEL.BACKBONE.NAME={name!r}: {e}") from e
    clip_model.requires_grad_(False)
    if check_size:
        check_input_size(cfg, clip_model)
    return clip_model


def load_dense_vit(cfg, model_dtype: torch.dtype, device: torch.device, method: str) -> CLIP:
    """:func:`load_frozen_clip` for dense (patch-map) methods: any input size, the positional
    embedding resized bicubic on the fly (open_clip's ``resize_pos_embed``); ``ConfigError``
    naming ``method`` unless the backbone is a ViT."""
    clip_model = load_frozen_clip(cfg, model_dtype, device, check_size=False)
    if not hasattr(clip_model.visual, "forward_features"):
        raise ConfigError(f"{method} needs a ViT backbone (patch tokens); "
                          f"{cfg.MODEL.BACKBONE.NAME!r} is not one")
    clip_model.visual.pos_interpolation = "bicubic"
    return clip_model


def _token_order(position: str, n_ctx: int, name_len: int, length: int) -> List[int]:
    """Source position (in the ``SOS ctx name . EOT`` layout) of each output position."""
    ctx = list(range(1, 1 + n_ctx))
    name = list(range(1 + n_ctx, 1 + n_ctx + name_len))
    rest = list(range(1 + n_ctx + name_len, length))
    if position == "end":
        return [0, *ctx, *name, *rest]
    if position == "front":
        return [0, *name, *ctx, *rest]
    half = n_ctx // 2
    return [0, *ctx[:half], *name, *ctx[half:], *rest]


def init_words(ctx_init: str) -> List[str]:
    """The words of ``ctx_init`` as upstream splits them (on single spaces). An empty word (a
    leading, trailing or doubled space) is an error: upstream would count it as a context word."""
    words = ctx_init.split(" ")
    if not ctx_init.strip() or any(not w for w in words):
        raise ConfigError(f"CTX_INIT {ctx_init!r} has an empty word (leading, trailing or doubled "
                          f"space); upstream counts it as a context word. Write the words "
                          f"separated by single spaces")
    return words


def init_context_embeddings(clip_model: CLIP, ctx_init: str, n_learned: int) -> Tensor:
    """Token embeddings (float32) at positions ``1 .. n_learned`` of the tokenized ``ctx_init``:
    the initial context as upstream CoOp, CoCoOp, MaPLe and IVLP take it. The rest of the init
    text stays fixed in the prompt. Logs once when the split between learned and fixed tokens
    does not fall on whole words, one per vector (e.g. BPE splits a word)."""
    tokenizer = default_tokenizer()
    token_ids = tokenizer.encode(ctx_init)
    if not 1 <= n_learned <= len(token_ids):
        raise ConfigError(f"the number of context vectors must lie in [1, {len(token_ids)}] (the "
                          f"BPE tokens of CTX_INIT {ctx_init!r}) to initialise from it; "
                          f"got {n_learned}")
    one_per_word = [tokenizer.encode(w) for w in ctx_init.split(" ")[:n_learned]]
    if [ids for word in one_per_word for ids in word] != token_ids[:n_learned] or \
            any(len(word) != 1 for word in one_per_word):
        pieces = [tokenizer.decode([i]).strip() for i in token_ids]
        logger.info(f"CTX_INIT {ctx_init!r}: BPE tokens {pieces}; the {n_learned} learned context "
                    f"vectors start from tokens {pieces[:n_learned]} and tokens "
                    f"{pieces[n_learned:]} stay fixed in the prompt before the class name "
                    f"(upstream's rule)")
    ids = tokenize(ctx_init).to(clip_model.token_embedding.weight.device)
    with torch.no_grad():
        return clip_model.token_embedding(ids)[0, 1:1 + n_learned].float().cpu()


class PromptLearner(nn.Module):
    """Context vectors ``ctx`` in the prompt ``SOS + ctx + <name> + "." + EOS`` of every class.

    Args:
        clip_model: the (frozen) CLIP whose token embedding and width are used.
        classnames: class names (underscores become spaces).
        n_ctx: number of context vectors when ``ctx_init`` is empty.
        ctx_init: words to initialise the context from (underscores become spaces). Upstream
            CoOp/CoCoOp's rule: the number of context vectors is the number of *words*
            (``len(ctx_init.split(" "))``), and they are initialised from the embeddings at token
            positions ``1 .. n_words`` of the tokenized init text; every later token of the init
            text stays fixed in the prompt before the class name. With "itap of a" (BPE: it, ap,
            of, a) the learned vectors start as "it" "ap" "of" and "a" stays fixed. Empty:
            ``N(0, 0.02)`` initialisation with ``n_ctx`` vectors.
        csc: class-specific context (``[n_cls, n_ctx, width]``) instead of one shared context.
        class_token_position: ``end``, ``middle`` (between the two context halves) or ``front``.
        template: what follows the context, ``{}`` standing for the class name (CoOp: ``"{}."``;
            TCP: e.g. ``"{}, a type of pet."``); ``middle``/``front`` need it to start with ``{}``.

    Buffers (not saved): ``token_prefix`` [n_cls, 1, width] (SOS), ``token_suffix``
    [n_cls, L - 1 - n_ctx, width] (name, ".", EOT, padding), ``eot_idx`` [n_cls],
    ``tokenized_prompts`` [n_cls, L] (token ids in the final layout; context positions hold
    the id of "X"), where L is the longest prompt's EOT position + 1.
    """

    def __init__(self, clip_model: CLIP, classnames: Sequence[str], n_ctx: int = 16,
                 ctx_init: str = "", csc: bool = False, class_token_position: str = "end",
                 template: str = "{}."):
        super().__init__()
        if class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ConfigError(f"class token position must be one of "
                              f"{', '.join(CLASS_TOKEN_POSITIONS)}; got {class_token_position!r}")
        names = prompt_classnames(classnames)
        self.n_cls = len(names)
        self.csc = csc
        self.class_token_position = class_token_position
        ctx_init = ctx_init.replace("_", " ")
        ctx, prompt_prefix = self.init_context(clip_model, n_ctx, ctx_init, csc)
        self.n_ctx = ctx.shape[-2]
        self.ctx = nn.Parameter(ctx)
        tokenizer = default_tokenizer()
        self.name_lens = [len(tokenizer.encode(name)) for name in names]
        self._register_tokens(clip_model, [f"{prompt_prefix} {template.format(name)}"
                                           for name in names])
        logger.info(f'Initial context: "{prompt_prefix}"; number of context tokens: {self.n_ctx}'
                    f"{' (class-specific)' if csc else ''}; class token at the {class_token_position}")

    def init_context(self, clip_model: CLIP, n_ctx: int, ctx_init: str,
                     csc: bool) -> Tuple[Tensor, str]:
        """Initial context (float32) and the text standing for it in the tokenized prompts."""
        width = clip_model.transformer.width
        if ctx_init:
            n_words = len(init_words(ctx_init))
            if n_words != n_ctx:
                logger.info(f"Context initialised from {ctx_init!r}: {n_words} context vectors, "
                            f"one per word as upstream CoOp counts them (the configured "
                            f"N_CTX={n_ctx} is not used)")
            ctx = init_context_embeddings(clip_model, ctx_init, n_words)
            if csc:
                ctx = ctx.unsqueeze(0).repeat(self.n_cls, 1, 1)
            return ctx, ctx_init
        if n_ctx < 1:
            raise ConfigError(f"N_CTX must be >= 1 when CTX_INIT is empty; got {n_ctx}")
        shape = (self.n_cls, n_ctx, width) if csc else (n_ctx, width)
        return nn.init.normal_(torch.empty(shape), std=0.02), " ".join(["X"] * n_ctx)

    def _register_tokens(self, clip_model: CLIP, prompts: List[str]) -> None:
        device = clip_model.token_embedding.weight.device
        tokens = tokenize(prompts, context_length=clip_model.context_length)
        eot_idx = tokens.argmax(dim=-1)
        length = int(eot_idx.max()) + 1
        tokens = tokens[:, :length]
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokens.to(device)).to(clip_model.dtype)
        order = None
        if self.class_token_position != "end":
            order = torch.tensor([_token_order(self.class_token_position, self.n_ctx, k, length)
                                  for k in self.name_lens], device=device)
            tokens = tokens.gather(1, order.cpu())
        self.register_buffer("token_prefix", embedding[:, :1], persistent=False)
        self.register_buffer("token_suffix", embedding[:, 1 + self.n_ctx:], persistent=False)
        self.register_buffer("token_order", order, persistent=False)
        self.register_buffer("eot_idx", eot_idx.to(device), persistent=False)
        self.register_buffer("tokenized_prompts", tokens.to(device), persistent=False)

    def construct_prompts(self, ctx: Tensor) -> Tensor:
        """Prompt embeddings [..., n_cls, L, width] from context ``ctx`` of shape
        [..., 1 or n_cls, n_ctx, width] (leading dims: e.g. one context per image)."""
        prefix, suffix = self.token_prefix, self.token_suffix
        ctx = ctx.to(prefix.dtype)
        lead = ctx.shape[:-3]
        shape = (*lead, self.n_cls)
        prompts = torch.cat([
            prefix.expand(*lead, *prefix.shape),
            ctx.expand(*shape, *ctx.shape[-2:]),
            suffix.expand(*lead, *suffix.shape),
        ], dim=-2)
        if self.token_order is not None:
            rows = torch.arange(self.n_cls, device=prompts.device).unsqueeze(1)
            prompts = prompts[..., rows, self.token_order, :]
        return prompts

    def forward(self) -> Tensor:
        """Prompt embeddings of every class: [n_cls, L, width]."""
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.unsqueeze(0)
        return self.construct_prompts(ctx)


@contextmanager
def unnormalised(model: "PromptedCLIP") -> Iterator[None]:
    """Within it, ``model``'s image and text encoders return features before the L2
    normalisation (DePT's head reads them)."""
    model.normalise = False
    try:
        yield
    finally:
        model.normalise = True


class PromptedCLIP(nn.Module):
    """A frozen CLIP and the method's learned parts; ``forward(images)`` gives logits.

    Subclasses implement :meth:`text_features` (class text features, normalised) or override
    ``forward``. During evaluation the trainer fills ``text_cache`` once (see
    :meth:`cache_text_features`) so class text features are not recomputed per batch.
    """

    def __init__(self, clip_model: CLIP):
        super().__init__()
        self.clip = clip_model
        self.register_buffer("text_cache", None, persistent=False)
        self.normalise = True  # False inside unnormalised(): encoders return raw features

    @property
    def dtype(self) -> torch.dtype:
        return self.clip.dtype

    def encode_image(self, images: Tensor, **prompts) -> Tensor:
        """Normalised image features [B, E]; ``prompts`` go to ``clip.visual`` (ViT prompts)."""
        IMAGES_ENCODED.count += images.shape[0]
        features = self.clip.visual(images, **prompts)
        return features / features.norm(dim=-1, keepdim=True) if self.normalise else features

    def image_features(self, x: Tensor) -> Tensor:
        """Normalised image features of images [B, 3, H, W], or ``x`` itself when it already is
        such features [B, E] (read from the feature cache)."""
        return x if x.dim() == 2 else self.encode_image(x)

    def encode_text(self, prompts: Tensor, eot_idx: Tensor,
                    deep_prompts: Optional[Sequence[Tensor]] = None,
                    group_size: Optional[int] = None) -> Tensor:
        """Normalised text features [N, E] of prompt embeddings [N, L, width], encoded in
        chunks of about ``TEXT_CHUNK`` prompts (whole groups of ``group_size`` consecutive rows
        that share their leading positions, see ``CLIP.encode_text_embeddings``; default: all
        rows). Deep prompts are [n_ctx, width] or [N, n_ctx, width]."""
        chunk = TEXT_CHUNK if group_size is None else max(1, TEXT_CHUNK // group_size) * group_size
        out = []
        for start in range(0, prompts.shape[0], chunk):
            stop = start + chunk
            deep = None if deep_prompts is None else [
                p[start:stop] if p is not None and p.dim() == 3 else p for p in deep_prompts]
            out.append(self.clip.encode_text_embeddings(prompts[start:stop], eot_idx[start:stop],
                                                        deep, group_size=group_size))
        features = torch.cat(out) if len(out) > 1 else out[0]
        return features / features.norm(dim=-1, keepdim=True) if self.normalise else features

    def logits(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        """``logit_scale * cos``: text [C, E] shared by the batch, or [B, C, E] per image."""
        scale = self.clip.logit_scale.exp().float()
        img, text = image_features.float(), text_features.float()
        if text.dim() == 2:
            return scale * img @ text.t()
        return scale * torch.einsum("be,bce->bc", img, text)

    def text_features(self) -> Tensor:
        """Normalised text features of every class [n_cls, E]."""
        raise NotImplementedError(f"{type(self).__name__} must implement text_features()")

    def cache_text_features(self) -> None:
        """Compute the class text features once and use them until :meth:`clear_text_cache`."""
        self.text_cache = self.text_features().detach()

    def clear_text_cache(self) -> None:
        self.text_cache = None

    def forward(self, images: Tensor) -> Tensor:
        """Logits [B, n_cls] of images [B, 3, H, W] or of cached image features [B, E]."""
        text = self.text_cache if self.text_cache is not None else self.text_features()
        return self.logits(self.image_features(images), text)
