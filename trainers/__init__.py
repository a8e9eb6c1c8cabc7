"""Prompt-learning trainers; importing this package registers them all."""
from . import cocoop, coop, zsclip  # noqa: F401  (register trainers and their config sections)
from . import ivlp, maple, vpt, vpt_deep  # noqa: F401  (deep prompt trainers)
from . import dept, kgcoop, prograd, promptsrc, tcp  # noqa: F401  (regularised prompt learners)
from . import mma  # noqa: F401  (multi-modal adapter)
from . import clip_adapter, clip_lora, linear_probe, tip_adapter  # noqa: F401  (adapters, probes)
from . import vpt_supervised  # noqa: F401  (VPT on supervised, non-CLIP ViTs)

from . import anomaly  # noqa: F401  (the CLIP anomaly-detection family, trainers/anomaly/)
