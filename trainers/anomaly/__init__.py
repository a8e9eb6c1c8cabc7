"""The CLIP anomaly-detection family: importing this package registers its trainers.

Shared pieces (records, losses, prompt ensembles, memory banks, safe converters) live in
:mod:`dassl_lite.engine.anomaly_core` and :mod:`dassl_lite.evaluation`; each method here holds
only what is its own.
"""
from . import zsad  # noqa: F401  (training-free baseline; first row of tools/anomaly.py --table)
from . import afclip  # noqa: F401  (AF-CLIP)
from . import aprilgan  # noqa: F401  (APRIL-GAN, VAND 2023)
from . import anomalyclip  # noqa: F401  (AnomalyCLIP, ICLR 2024)
from . import adaclip  # noqa: F401  (AdaCLIP, ECCV 2024)
from . import winclip  # noqa: F401  (WinCLIP / WinCLIP+, training-free)
