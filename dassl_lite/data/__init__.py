"""Data: records, datasets with split files and few-shot sampling, transforms, samplers, loaders."""
from .data_manager import DataManager, DatasetWrapper, build_data_loader, build_dataset, read_image
from .dataset_base import DatasetBase
from .datum import Datum
from .errors import DatasetLayoutError, ImageReadError
from .samplers import build_sampler
from .split_dataset import SplitDataset
from .transforms import INTERPOLATION_MODES, TransformStep, build_transform, register_transform

__all__ = [
    "DataManager",
    "DatasetBase",
    "DatasetLayoutError",
    "DatasetWrapper",
    "Datum",
    "ImageReadError",
    "INTERPOLATION_MODES",
    "SplitDataset",
    "TransformStep",
    "build_data_loader",
    "build_dataset",
    "build_sampler",
    "build_transform",
    "read_image",
    "register_transform",
]
