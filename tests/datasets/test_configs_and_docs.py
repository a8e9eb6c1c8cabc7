"""The dataset configs name registered datasets; every error points to an existing DATASETS.md section."""
import os
import re

import pytest

from dassl_lite.config import get_cfg_default, merge_from_file
from dassl_lite.registry import DATASET_REGISTRY

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {
    "oxford_pets": "OxfordPets", "oxford_flowers": "OxfordFlowers", "fgvc_aircraft": "FGVCAircraft",
    "dtd": "DescribableTextures", "eurosat": "EuroSAT", "stanford_cars": "StanfordCars",
    "food101": "Food101", "sun397": "SUN397", "caltech101": "Caltech101", "ucf101": "UCF101",
    "imagenet": "ImageNet", "imagenetv2": "ImageNetV2", "imagenet_sketch": "ImageNetSketch",
    "imagenet_a": "ImageNetA", "imagenet_r": "ImageNetR", "cub200": "CUB200",
}


def github_anchors(markdown: str):
    """Anchors GitHub gives the headings: lower case, punctuation but '-' dropped, spaces -> '-'."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_config_names_registered_dataset(config):
    cfg = get_cfg_default()
    merge_from_file(cfg, os.path.join(REPO, "configs", "datasets", f"{config}.yaml"))
    assert cfg.DATASET.NAME == CONFIGS[config] and cfg.DATASET.NAME in DATASET_REGISTRY


@pytest.mark.parametrize("name", sorted(set(CONFIGS.values())))
def test_instructions_point_to_a_section(name):
    with open(os.path.join(REPO, "DATASETS.md")) as f:
        anchors = github_anchors(f.read())
    instructions = DATASET_REGISTRY.get(name).instructions
    assert instructions.startswith("see DATASETS.md#")
    assert instructions.split("#", 1)[1] in anchors
