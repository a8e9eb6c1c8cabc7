"""OpenAI CLIP for prompt learning: model, tokenizer, weight loader and prompt-ready encoders.

``from dassl_lite.clip import build_model, tokenize, load_clip, available_models``
"""
from .loader import (CLIPChecksumError, CLIPWeightsNotFoundError, available_models, load_clip,
                     read_state_dict, resolve_checkpoint)
from .model import CLIP, CLIPConfig, build_model, convert_weights, default_heads, infer_config
from .resnet import ModifiedResNet
from .tokenizer import SimpleTokenizer, default_tokenizer, tokenize
from .transformer import ResidualAttentionBlock, Transformer, use_exact_gelu
from .vit import VisionFeatures, VisionTransformer, interpolate_positional_embedding

__all__ = [
    "CLIP", "CLIPConfig", "CLIPChecksumError", "CLIPWeightsNotFoundError", "ModifiedResNet",
    "ResidualAttentionBlock", "SimpleTokenizer", "Transformer", "VisionFeatures", "VisionTransformer",
    "available_models", "build_model", "convert_weights", "default_heads", "default_tokenizer",
    "infer_config", "interpolate_positional_embedding", "load_clip", "read_state_dict", "resolve_checkpoint", "tokenize",
    "use_exact_gelu",
]
