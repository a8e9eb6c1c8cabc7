"""Dataset classes (an application package loaded from the repository root, not installed).

Importing this package registers every dataset in DATASET_REGISTRY: one import line per module.
"""
from . import toy_world  # noqa: F401  (ToyShapes, ToyTextures, ToySketch)
from . import caltech101, cub200, dtd, eurosat, fgvc_aircraft, food101  # noqa: F401
from . import imagenet, imagenet_a, imagenet_r, imagenet_sketch, imagenetv2  # noqa: F401
from . import oxford_flowers, oxford_pets, stanford_cars, sun397, ucf101  # noqa: F401
from . import fgvc_json  # noqa: F401  (NABirds, StanfordDogs, OxfordFlowersVPT, StanfordCarsVPT)

from . import mvtec, visa, toy_anomaly_world  # noqa: F401  (MVTecAD, VisA, ToyMVTec, ToyVisA)
from . import anomaly_images  # noqa: F401  (AnomalyImages: a file or folder to score)
from . import anomaly_folder  # noqa: F401  (AnomalyFolder: own data, anomalib's Folder layout)
from . import vtab  # noqa: F401  (VTAB1k_<task>: the 19 VTAB-1k tasks and the 3 toy tasks)
