"""Non-CLIP image backbones: supervised ViTs (timm) with VPT prompt hooks and their loaders."""
from .loader import (ASSETS_DIR, CACHE_ENV, MODEL_ZOO, ViTWeightsFormatError,
                     ViTWeightsNotFoundError, infer_arch, load_supervised_vit, read_vit_weights,
                     resolve_vit_file)
from .vit import ARCHS, PromptableViT, ViTArch, build_timm_vit

__all__ = ["ARCHS", "ASSETS_DIR", "CACHE_ENV", "MODEL_ZOO", "PromptableViT", "ViTArch",
           "ViTWeightsFormatError", "ViTWeightsNotFoundError", "build_timm_vit", "infer_arch",
           "load_supervised_vit", "read_vit_weights", "resolve_vit_file"]
