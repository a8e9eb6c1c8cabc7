"""Dataset classes (an application package loaded from the repository root, not installed).

Importing this package registers every dataset in DATASET_REGISTRY: one import line per module.
"""
from . import toy_world  # noqa: F401  (ToyShapes, ToyTextures, ToySketch)
