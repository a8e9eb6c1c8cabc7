"""EuroSAT: 10 land-use classes of Sentinel-2 satellite images (``eurosat/``)."""
from __future__ import annotations

from dassl_lite.registry import DATASET_REGISTRY

from .benchmark import BenchmarkDataset

# Folder name -> class name used in prompts (upstream's names).
NEW_CNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@DATASET_REGISTRY.register()
class EuroSAT(BenchmarkDataset):
    """``2750/<Class>/*.jpg``; the split is built from the class folders (50/20/30% per class),
    class names renamed by :data:`NEW_CNAMES`."""

    dataset_dir = "eurosat"
    image_dir = "2750"
    split_file = "split_zhou_EuroSAT.json"
    split_file_id = "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"
    num_classes_expected = 10
    layout = "eurosat/2750/<Class>/*.jpg + eurosat/split_zhou_EuroSAT.json"
    instructions = "see DATASETS.md#eurosat"

    def build_split(self):
        return self.split_class_folders(new_cnames=NEW_CNAMES)
