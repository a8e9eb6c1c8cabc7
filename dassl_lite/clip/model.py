"""The CLIP model, its architecture inference from OpenAI state dicts, and precision casting."""
import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .resnet import ModifiedResNet
from .transformer import LayerNorm, MultiheadSelfAttention, Transformer, as_batched_tokens
from .vit import VisionTransformer

__all__ = ["CLIP", "CLIPConfig", "infer_config", "build_model", "convert_weights", "default_heads"]

# Non-parameter entries that OpenAI's TorchScript archives carry in their state dicts.
_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def default_heads(width: int) -> int:
    """OpenAI's head count for a transformer of this width: 64-wide heads (at least one)."""
    return max(1, width // 64)


@dataclass(frozen=True)
class CLIPConfig:
    """Every dimension of a CLIP model (OpenAI's ``build_model`` arguments, heads explicit)."""

    embed_dim: int  # joint image-text embedding size (text_projection columns)
    image_resolution: int  # input image side in pixels
    vision_layers: Union[int, Tuple[int, int, int, int]]  # ViT depth, or blocks per ResNet stage
    vision_width: int  # ViT width, or ResNet stem width (64 for RN50)
    vision_patch_size: Optional[int]  # ViT patch side; None for ResNets
    vision_heads: int  # ViT heads, or attention-pool heads for ResNets
    context_length: int  # text positions (77)
    vocab_size: int  # token embedding rows (49408)
    transformer_width: int  # text transformer width
    transformer_heads: int  # text transformer heads
    transformer_layers: int  # text transformer depth

    @property
    def is_vit(self) -> bool:
        """True for a Vision Transformer image encoder, False for a ModifiedResNet."""
        return isinstance(self.vision_layers, int)


class CLIP(nn.Module):
    """OpenAI CLIP with prompt-ready encoders.

    Attributes as OpenAI's (``visual``, ``transformer``, ``token_embedding``,
    ``positional_embedding``, ``ln_final``, ``text_projection``, ``logit_scale``, ``dtype``,
    ``context_length``, ``vocab_size``) plus ``config`` and ``embed_dim``.
    """

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.embed_dim
        self.context_length = config.context_length
        self.vocab_size = config.vocab_size
        self.visual = _build_visual(config)
        self.transformer = Transformer(config.transformer_width, config.transformer_layers,
                                       config.transformer_heads, causal=True)
        self.token_embedding = nn.Embedding(config.vocab_size, config.transformer_width)
        self.positional_embedding = nn.Parameter(
            torch.empty(config.context_length, config.transformer_width))
        self.ln_final = LayerNorm(config.transformer_width)
        self.text_projection = nn.Parameter(torch.empty(config.transformer_width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """OpenAI's random initialisation (used for new models; checkpoints overwrite it)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            self.visual.initialize_parameters()
        self.transformer.initialize_parameters()
        nn.init.normal_(self.text_projection, std=self.transformer.width ** -0.5)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype of the encoders (that of the first image conv)."""
        return self.visual.conv1.weight.dtype

    def encode_image(self, image: Tensor) -> Tensor:
        """Images [B, 3, R, R] -> features [B, embed_dim] (not normalised)."""
        return self.visual(image)

    def encode_text(self, text: Tensor) -> Tensor:
        """Token ids [N, L] (EOT = the largest id of each row) -> features [N, embed_dim]."""
        return self.encode_text_embeddings(self.token_embedding(text), text.argmax(dim=-1))

    def encode_text_embeddings(self, x: Tensor, eot_idx: Tensor,
                               deep_prompts: Optional[Sequence[Tensor]] = None,
                               group_size: Optional[int] = None) -> Tensor:
        """Encode token embeddings ``x`` [N, L, width] (before the positional embedding).

        ``eot_idx`` [N] gives each row's EOT position; its feature after ``ln_final`` is projected
        by ``text_projection``. Entry k of ``deep_prompts`` ([n_ctx, width] or
        [N, n_ctx, width]; ``None``: none at that layer) replaces positions ``[1 : 1 + n_ctx]`` at
        the input of layer k+1, as upstream MaPLe/IVLP do (no positional embedding is added to
        deep prompts there either).
        The sequence is cut after ``max(eot_idx) + 1`` first: under the causal mask no EOT
        feature depends on later positions, so the result is unchanged and cheaper.
        For the same reason, leading positions that are equal in every row of a group of
        ``group_size`` consecutive rows (default: all rows; e.g. SOT and CoOp's context, shared
        by every class) are computed once per group, and the last layer computes EOT's query and
        MLP only (:meth:`Transformer.forward_at`).
        Upstream casts deep prompts with ``.half()`` even in fp32 models; here they are cast to
        the model's dtype.
        """
        low, high = self._check_text_inputs(x, eot_idx)
        length = high + 1
        x = x[:, :length].to(self.dtype) + self.positional_embedding[:length].to(self.dtype)
        group_size = x.shape[0] if group_size is None else group_size
        if self.transformer.can_share_prefix():
            shared = shared_prefix_length(x, group_size, low, deep_prompts)
            x = self.transformer.forward_at(x, eot_idx, shared, group_size, deep_prompts,
                                            prompt_start=1)
        else:
            rows = torch.arange(x.shape[0], device=x.device)
            x = self.transformer(x, deep_prompts, prompt_start=1)[rows, eot_idx]
        return self.ln_final(x) @ self.text_projection

    def encode_text_prefixed(self, prefix: Tensor, text: Tensor) -> Tensor:
        """Encode token ids ``text`` [N, L] with learned vectors ``prefix`` placed BEFORE SOT.

        ``prefix`` is [P, width] (shared by every row) or [N, P, width]. The input sequence is
        ``[prefix_1..prefix_P, SOT, tokens..., EOT, pad...]`` cut to ``context_length`` (only
        padding falls off when ``P + EOT position < context_length``); the positional embedding is
        added to all positions, prefix included, and the feature is read at ``P + argmax(text)``
        (AF-CLIP's state prompts). Under the causal mask the prefix sees only earlier prefix
        vectors. Raises ``ValueError`` when the shifted EOT would fall beyond the context.
        """
        if text.dim() != 2:
            raise ValueError(f"text must be token ids of shape [N, L]; got {list(text.shape)}")
        width = self.transformer.width
        prefix = as_batched_tokens(prefix, text.shape[0], width, "prefix")
        n_prefix = prefix.shape[1]
        eot_idx = n_prefix + text.argmax(dim=-1)
        if int(eot_idx.max()) >= self.context_length:
            raise ValueError(f"{n_prefix} prefix vectors + the longest prompt "
                             f"({int(text.argmax(dim=-1).max()) + 1} tokens) exceed the context "
                             f"length {self.context_length}")
        tokens = self.token_embedding(text[:, :self.context_length - n_prefix])
        x = torch.cat([prefix.to(tokens.dtype), tokens], dim=1)
        return self.encode_text_embeddings(x, eot_idx)

    def _check_text_inputs(self, x: Tensor, eot_idx: Tensor) -> Tuple[int, int]:
        """Validate the shapes; return the smallest and largest EOT positions."""
        width = self.transformer.width
        if x.dim() != 3 or x.shape[-1] != width or not 0 < x.shape[1] <= self.context_length:
            raise ValueError(f"text embeddings must have shape [N, L<={self.context_length}, "
                             f"{width}]; got {list(x.shape)}")
        if eot_idx.shape != x.shape[:1] or eot_idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"eot_idx must be an integer tensor of shape [{x.shape[0]}]; "
                             f"got {eot_idx.dtype} {list(eot_idx.shape)}")
        low, high = torch.stack(torch.aminmax(eot_idx)).tolist()  # one device sync
        if low < 0 or high >= x.shape[1]:
            raise ValueError(f"eot_idx must lie in [0, {x.shape[1] - 1}] (the sequence length); "
                             f"got values {low} to {high}")
        return low, high

    def forward(self, image: Tensor, text: Tensor) -> Tuple[Tensor, Tensor]:
        """OpenAI's contrastive logits: (logits_per_image, logits_per_text)."""
        image_features = self.encode_image(image)
        text_features = self.encode_text(text)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


def shared_prefix_length(x: Tensor, group_size: int, last: int,
                         deep_prompts: Optional[Sequence[Tensor]] = None) -> int:
    """How many leading positions of ``x`` [N, L, width] are equal in every row of each group of
    ``group_size`` consecutive rows, at most ``last`` (the first EOT stays per row); 0 when
    sharing does not apply (one row per group, per-row deep prompts, deep prompts reaching past
    the shared positions)."""
    n, length = x.shape[:2]
    if group_size < 2 or n % group_size:
        return 0
    deep = [p for p in deep_prompts or [] if p is not None]
    if any(p.dim() != 2 for p in deep):
        return 0
    with torch.no_grad():
        groups = x.view(n // group_size, group_size, length, -1)
        same = (groups == groups[:, :1]).flatten(0, 1).all(dim=-1).all(dim=0)  # [L]
        shared = min(int(same.long().cumprod(0).sum()), last)
    if any(1 + p.shape[0] > shared for p in deep):
        return 0
    return shared


def _build_visual(config: CLIPConfig) -> nn.Module:
    if config.is_vit:
        return VisionTransformer(config.image_resolution, config.vision_patch_size,
                                 config.vision_width, config.vision_layers, config.vision_heads,
                                 config.embed_dim)
    return ModifiedResNet(config.vision_layers, config.embed_dim, config.vision_heads,
                          config.image_resolution, config.vision_width)


def _require(state_dict: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in state_dict:
        raise ValueError(f"not an OpenAI-format CLIP state dict: key {key!r} is missing "
                         f"(got {len(state_dict)} keys, e.g. {list(state_dict)[:3]})")
    return state_dict[key]


def _infer_vision(sd: Mapping[str, Tensor]) -> dict:
    if "visual.proj" in sd:
        width, _, patch, _ = _require(sd, "visual.conv1.weight").shape
        rows = _require(sd, "visual.positional_embedding").shape[0]
        layers = sum(1 for k in sd
                     if k.startswith("visual.") and k.endswith(".attn.in_proj_weight"))
        heads = default_heads(width)
    else:
        width = _require(sd, "visual.layer1.0.conv1.weight").shape[0]
        rows = _require(sd, "visual.attnpool.positional_embedding").shape[0]
        layers = tuple(len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}.")})
                       for b in (1, 2, 3, 4))
        patch, heads = None, default_heads(width * 32)
    grid = round((rows - 1) ** 0.5)
    if grid ** 2 + 1 != rows:
        raise ValueError(f"visual positional embedding must have grid**2 + 1 rows; got {rows}")
    return dict(vision_layers=layers, vision_width=width, vision_patch_size=patch,
                vision_heads=heads, image_resolution=grid * (patch or 32))


def infer_config(state_dict: Mapping[str, Tensor]) -> CLIPConfig:
    """Infer every dimension from an OpenAI-format state dict (only shapes and keys are read).

    Heads are not stored in checkpoints; like OpenAI they are ``width // 64``.
    """
    text_width = _require(state_dict, "ln_final.weight").shape[0]
    text_layers = len({k.split(".")[2] for k in state_dict
                       if k.startswith("transformer.resblocks.")})
    return CLIPConfig(
        embed_dim=_require(state_dict, "text_projection").shape[1],
        context_length=_require(state_dict, "positional_embedding").shape[0],
        vocab_size=_require(state_dict, "token_embedding.weight").shape[0],
        transformer_width=text_width,
        transformer_heads=default_heads(text_width),
        transformer_layers=text_layers,
        **_infer_vision(state_dict),
    )


def build_model(state_dict: Mapping[str, Tensor]) -> CLIP:
    """Build a float32 CLIP (eval mode) whose architecture is inferred from ``state_dict``.

    The model holds float32 copies of the given tensors (never the tensors themselves).
    """
    state_dict = {k: v.to(torch.float32, copy=True) if v.is_floating_point() else v.clone()
                  for k, v in state_dict.items() if k not in _EXTRA_KEYS}
    config = infer_config(state_dict)
    with torch.device("meta"):
        model = CLIP(config)
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as err:
        raise ValueError(
            f"state dict does not fit the inferred architecture {config}: {err}") from err
    return model.eval()


def convert_weights(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast the weights OpenAI casts (convolutions, linears, attention projections,
    ``text_projection``, ``proj``) to ``dtype`` in place; norms and embeddings stay as they are
    and are cast on use. Returns ``model``."""
    def cast(param: Optional[nn.Parameter]) -> None:
        if param is not None:
            param.data = param.data.to(dtype)

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            cast(module.weight)
            cast(module.bias)
        if isinstance(module, MultiheadSelfAttention):
            cast(module.in_proj_weight)
            cast(module.in_proj_bias)
        for name in ("text_projection", "proj"):
            if isinstance(getattr(module, name, None), nn.Parameter):
                cast(getattr(module, name))
    return model
