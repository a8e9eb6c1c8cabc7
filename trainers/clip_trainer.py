"""ClipPromptTrainer: the build, training step, evaluation cache and checkpoint mapping that every
CLIP prompt-learning trainer shares. A method implements :meth:`build_prompted_clip`."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dassl_lite.clip import CLIP
from dassl_lite.clip.compile import compile_clip, compiler_unavailable
from dassl_lite.config import ConfigError
from dassl_lite.engine import TrainerX, load_checkpoint
from dassl_lite.optim import build_lr_scheduler, build_optimizer

from .prompting import PromptedCLIP, load_frozen_clip

logger = logging.getLogger(__name__)


class ClipPromptTrainer(TrainerX):
    """A frozen CLIP with a trainable prompt learner (CoOp, CoCoOp; MaPLe-style methods too).

    ``build_model`` loads the backbone (frozen, in the precision's model dtype), asks
    :meth:`build_prompted_clip` for the method's module, freezes everything outside
    :meth:`trainable_module` (whose parameters are kept in float32), builds the optimizer and
    scheduler over the trainable parameters and registers the trainable module as
    ``model_name`` (upstream's checkpoint folder name). Subclasses set ``precision_key``.
    """

    model_name = "prompt_learner"  # registered name = checkpoint folder (upstream's)
    # Whether the image encoder takes learned inputs (prompts, adapters inside it). When False,
    # image features are fixed, so val/test features come from the on-disk feature cache and
    # DATALOADER.FEATURE_CACHE.TRAIN_VIEWS may train on cached views. Conservative default.
    prompted_image_encoder = True
    # What the model's encode_image gives the feature cache: "normalised" (the forward's input)
    # or "unnormalised" (before the L2 normalisation: DePT's head reads it).
    cached_features = "normalised"
    trains_on_images = True  # False: no training loop (zero-shot), no training features
    cache_text_in_eval = True  # compute class text features once per evaluation
    # Keys of upstream checkpoints rebuilt from the class names here (not learned; dropped).
    fixed_checkpoint_keys: Sequence[str] = ("token_prefix", "token_suffix")

    @property
    def section_key(self) -> str:
        """Dotted name of this trainer's config section (``TRAINER.<KEY>``, from
        ``precision_key``)."""
        return self.precision_key.rpartition(".")[0]

    def section_of(self, cfg):
        """This trainer's config section of ``cfg`` (``cfg.TRAINER.<KEY>``)."""
        return cfg.TRAINER[self.section_key.split(".")[1]]

    @property
    def section(self):
        """This trainer's config section (``cfg.TRAINER.<KEY>``)."""
        return self.section_of(self.cfg)

    # ------------------------------------------------------------------ build
    def build_model(self) -> None:
        cfg = self.cfg
        logger.info(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
        clip_model = self.build_clip()
        logger.info("Building the prompted CLIP")
        self.model = self.build_prompted_clip(clip_model, self.dm.dataset.classnames).to(self.device)
        learner = self.trainable_module()
        self.freeze_all_but(learner)
        self.optim = build_optimizer(learner, cfg.OPTIM, self.param_groups(learner))
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.model_name, learner, self.optim, self.sched)
        if cfg.MODEL.INIT_WEIGHTS:
            self.load_init_weights(cfg.MODEL.INIT_WEIGHTS)
        self.setup_feature_cache()
        if cfg.MODEL.COMPILE:
            self.compile_model()

    def build_clip(self) -> CLIP:
        """The frozen backbone in ``self.precision.model_dtype``; override to modify it."""
        return load_frozen_clip(self.cfg, self.precision.model_dtype, self.device)

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> PromptedCLIP:
        """The method's module (holding ``clip_model`` and its learned parts); every method
        overrides this."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_prompted_clip()")

    def compile_model(self) -> None:
        """``MODEL.COMPILE``: ``torch.compile`` the frozen encoders and the prompt learner's
        forward in place (parameter names unchanged); a ConfigError where it cannot run."""
        reason = compiler_unavailable()
        if reason:
            raise ConfigError(f"MODEL.COMPILE True needs torch.compile: {reason}; set "
                              f"MODEL.COMPILE False")
        compile_clip(self.unwrapped_model.clip)
        self.trainable_module().compile()
        self.compiled = True
        logger.info("MODEL.COMPILE: the CLIP encoders and the prompt learner are compiled "
                    "(torch.compile; the first batch of each shape compiles)")

    def trainable_module(self) -> nn.Module:
        """The module that is trained and checkpointed (default: ``model.prompt_learner``)."""
        return self.model.prompt_learner

    def param_groups(self, learner: nn.Module) -> Optional[List[Dict[str, Any]]]:
        """Optimizer param groups of ``learner``; None: Dassl's (``OPTIM.STAGED_LR`` or one)."""
        return None

    def freeze_all_but(self, learner: nn.Module) -> None:
        """Freeze every parameter outside ``learner``; keep ``learner``'s trainables in fp32."""
        keep = {id(p) for p in learner.parameters()}
        for p in self.model.parameters():
            if id(p) not in keep:
                p.requires_grad_(False)
        names = []
        for name, p in learner.named_parameters():
            if p.requires_grad:
                p.data = p.data.float()
                names.append(name)
        count = sum(p.numel() for p in learner.parameters() if p.requires_grad)
        logger.info(f"Parameters to be updated ({count:,} values): {names}")

    def load_init_weights(self, path: str) -> None:
        """``MODEL.INIT_WEIGHTS``: start from a checkpoint file of the trainable module."""
        ckpt = load_checkpoint(path)
        self._load_into(self.model_name, ckpt["state_dict"], path)
        logger.info(f"Initialised {self.model_name!r} from {path} (MODEL.INIT_WEIGHTS)")

    # ------------------------------------------------------------------ feature cache
    def _feature_cache_blocker(self) -> str:
        """Why the feature cache cannot serve this run ("" when it can)."""
        cfg = self.cfg
        fc = cfg.DATALOADER.FEATURE_CACHE
        if self.prompted_image_encoder:
            if fc.TRAIN_VIEWS > 0:
                raise ConfigError(
                    f"DATALOADER.FEATURE_CACHE.TRAIN_VIEWS {fc.TRAIN_VIEWS} trains on cached image "
                    f"features, but {type(self).__name__} prompts or adapts its image encoder (it "
                    f"needs more than the frozen normalised features); set TRAIN_VIEWS 0")
            return f"{type(self).__name__} prompts or adapts its image encoder"
        if not fc.ENABLED:
            return "DATALOADER.FEATURE_CACHE.ENABLED is False"
        if cfg.DATALOADER.K_TRANSFORMS > 1 or cfg.DATALOADER.RETURN_IMG0:
            return "DATALOADER.K_TRANSFORMS > 1 or RETURN_IMG0 asks for images"
        if isinstance(self.dm.tfm_test, (list, tuple)):
            return "several test transforms"
        return ""

    def setup_feature_cache(self) -> None:
        """Serve val/test images, and training images (see :meth:`setup_train_features`), as
        cached frozen features when this trainer's image encoder takes no prompt; logs the
        decision."""
        fc = self.cfg.DATALOADER.FEATURE_CACHE
        self.train_views = False
        reason = self._feature_cache_blocker()
        if reason:
            logger.info(f"Feature cache: not used ({reason})")
            return
        from dassl_lite.data.feature_cache import FeatureCache, module_digest, store_dtype_name
        from dassl_lite.data.feature_loaders import CachedEvalLoader

        cache = FeatureCache(fc.DIR, int(fc.MAX_GB * 2**30))
        digest = module_digest(self.model.clip.visual)
        dtype = store_dtype_name(fc.DTYPE, self.precision.model_dtype)

        def encode(images: torch.Tensor) -> torch.Tensor:
            with torch.no_grad(), self.precision.autocast():
                return self.unwrapped_model.encode_image(images.to(self.device))

        def bucket(tfm):
            return cache.bucket(digest, dtype, repr(tfm), self.precision.name,
                                self.cached_features)

        workers = self.cfg.DATALOADER.NUM_WORKERS
        logger.info(f"Feature cache: {cache.root} ({dtype}; image encoder sha256 {digest[:12]})")
        test_bucket = bucket(self.dm.tfm_test)
        self.test_loader = CachedEvalLoader("test", self.test_loader, test_bucket, encode, workers)
        if self.val_loader is not None:
            self.val_loader = CachedEvalLoader("val", self.val_loader, test_bucket, encode, workers)
        if self.trains_on_images:
            self.setup_train_features(bucket(self.dm.tfm_train), encode)

    def setup_train_features(self, bucket, encode) -> None:
        """Train on cached features: K views (``TRAIN_VIEWS``, approximate), or every flip
        outcome (``TRAIN_EXACT``, when flips are the transform's only randomness); logs which."""
        from dassl_lite.data.feature_loaders import (cached_train_loader, exact_train_loader,
                                                     flip_probabilities)

        fc = self.cfg.DATALOADER.FEATURE_CACHE
        loader = self.train_loader_x
        flips = flip_probabilities(loader.dataset.transform)
        if fc.TRAIN_VIEWS > 0:
            self.train_loader_x = cached_train_loader(loader, bucket, encode, fc.TRAIN_VIEWS)
            self.train_views = True
            mode = (f"{fc.TRAIN_VIEWS} cached views per image, one drawn per epoch (an "
                    f"approximation of fresh augmentation)")
            if flips is not None:
                mode += (f"; the transform's only randomness is {len(flips)} flip(s), which "
                         f"TRAIN_VIEWS 0 caches exactly")
        elif not fc.TRAIN_EXACT:
            mode = "fresh images (DATALOADER.FEATURE_CACHE.TRAIN_EXACT is False)"
        elif flips is None:
            mode = ("fresh images (the transform draws more than flips; "
                    "DATALOADER.FEATURE_CACHE.TRAIN_VIEWS K trains on K cached views)")
        else:
            self.train_loader_x = exact_train_loader(loader, bucket, encode)
            mode = (f"cached features of all {2 ** len(flips)} flip outcomes, flips drawn as "
                    f"with images (exact)")
        logger.info(f"Feature cache: training on {mode}")

    def before_epoch(self) -> None:
        if getattr(self, "train_views", False):
            self.train_loader_x.dataset.set_epoch(self.cfg.SEED, self.epoch)

    # ------------------------------------------------------------------ train
    def forward_backward(self, batch: Dict[str, Any]) -> Dict[str, float]:
        images, labels = self.parse_batch_train(batch)
        with self.precision.autocast():
            logits = self.model(images)
            loss = F.cross_entropy(logits.float(), labels)
        self.model_backward_and_update(loss)
        acc = (logits.argmax(dim=1) == labels).float().mean().item() * 100
        return {"loss": loss.item(), "acc": acc}

    # ------------------------------------------------------------------ evaluation
    def before_test(self) -> None:
        if self.cache_text_in_eval:
            with self.precision.autocast():
                self.unwrapped_model.cache_text_features()

    def after_test(self) -> None:
        if self.cache_text_in_eval:
            self.unwrapped_model.clear_text_cache()

    # ------------------------------------------------------------------ checkpoints
    def remap_checkpoint_state(
        self, name: str, state_dict: Dict[str, torch.Tensor]
    ) -> Dict[str, torch.Tensor]:
        """Drop the fixed token embeddings that upstream checkpoints carry."""
        dropped = [k for k in state_dict if k in self.fixed_checkpoint_keys]
        if dropped:
            logger.info(f"Ignoring fixed token embeddings {dropped} (rebuilt from the class names)")
        return {k: v for k, v in state_dict.items() if k not in self.fixed_checkpoint_keys}
