"""Zero-shot CLIP with a hand-written prompt per dataset (``ZeroshotCLIP``) or an ensemble of
prompt templates (``ZeroshotCLIP2``), as in CoOp's ``zsclip.py``.

Class text features are fixed, so they are computed once when the model is built. There is
nothing to train or load: ``train()`` evaluates and ``load_model()`` does nothing; no model is
registered, so ``tools/train.py --eval-only`` needs no ``--model-dir``.
The frozen CLIP runs at ``TRAINER.COOP.PREC`` (zero-shot runs use CoOp's config files upstream).
"""
from __future__ import annotations

import logging
from typing import List, Sequence

import torch
from torch import Tensor

from dassl_lite.clip import CLIP, tokenize
from dassl_lite.engine import TrainingFree
from dassl_lite.registry import TRAINER_REGISTRY

from .clip_trainer import ClipPromptTrainer
from .prompting import PromptedCLIP, prompt_classnames

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "a photo of a {}."
# Hand-written prompt per dataset (upstream's CUSTOM_TEMPLATES) plus the toy world's datasets.
CUSTOM_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "DTD": "{} texture.",  # alias of DescribableTextures
    "CUB200": "a photo of a {}, a type of bird.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
    "ToyShapes": "a photo of a {}.",
    "ToyTextures": "a photo of a {}.",
    "ToySketch": "a photo of a {}.",
}
# The 7 templates CoOp's ZeroshotCLIP2 ensembles (selected from CLIP's 80 ImageNet templates).
IMAGENET_TEMPLATES_SELECT = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def dataset_template(dataset: str) -> str:
    """The hand-written prompt of ``dataset`` (``DEFAULT_TEMPLATE`` with a warning if unknown)."""
    if dataset not in CUSTOM_TEMPLATES:
        logger.warning(f"No prompt template for dataset {dataset!r}; using {DEFAULT_TEMPLATE!r} "
                       f"(add one to trainers.zsclip.CUSTOM_TEMPLATES)")
    return CUSTOM_TEMPLATES.get(dataset, DEFAULT_TEMPLATE)


class ZeroshotCLIPModel(PromptedCLIP):
    """CLIP with fixed class text features: the mean (re-normalised) over ``templates`` of the
    normalised features of ``template.format(name)``; one template gives upstream's features."""

    def __init__(self, clip_model: CLIP, classnames: Sequence[str], templates: Sequence[str]):
        super().__init__(clip_model)
        names = prompt_classnames(classnames)
        texts = [t.format(name) for t in templates for name in names]
        logger.info(f"Prompts ({len(templates)} template(s)), e.g. {texts[:3]}")
        self.register_buffer("fixed_text_features", self._encode(texts, len(templates)),
                             persistent=False)

    @torch.no_grad()
    def _encode(self, texts: List[str], n_templates: int) -> Tensor:
        tokens = tokenize(texts, context_length=self.clip.context_length)
        eot_idx = tokens.argmax(dim=-1)
        tokens = tokens[:, :int(eot_idx.max()) + 1].to(self.clip.token_embedding.weight.device)
        features = self.encode_text(self.clip.token_embedding(tokens), eot_idx.to(tokens.device))
        features = features.view(n_templates, -1, features.shape[-1]).float().mean(dim=0)
        return features / features.norm(dim=-1, keepdim=True)

    def text_features(self) -> Tensor:
        return self.fixed_text_features


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(TrainingFree, ClipPromptTrainer):
    """Zero-shot CLIP with the dataset's hand-written prompt (upstream ``CUSTOM_TEMPLATES``)."""

    prompted_image_encoder = False  # image features come from the feature cache
    trains_on_images = False

    precision_key = "TRAINER.COOP.PREC"
    cache_text_in_eval = False  # the text features are fixed at build time

    def templates(self) -> List[str]:
        """The prompt templates to encode (one: the dataset's)."""
        return [dataset_template(self.cfg.DATASET.NAME)]

    def build_model(self) -> None:
        clip_model = self.build_clip()
        with self.precision.autocast():
            self.model = self.build_prompted_clip(clip_model, self.dm.dataset.classnames)
        self.setup_feature_cache()

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> ZeroshotCLIPModel:
        return ZeroshotCLIPModel(clip_model, classnames, self.templates()).to(self.device)


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(ZeroshotCLIP):
    """Zero-shot CLIP with prompt ensembling over ``IMAGENET_TEMPLATES_SELECT`` plus the
    dataset's own template (except for ImageNet), as upstream."""

    def templates(self) -> List[str]:
        templates = list(IMAGENET_TEMPLATES_SELECT)
        if self.cfg.DATASET.NAME != "ImageNet":
            templates.append(dataset_template(self.cfg.DATASET.NAME))
        return templates
