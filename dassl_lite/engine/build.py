"""Build the trainer named by ``cfg.TRAINER.NAME``."""
import logging

from ..registry import TRAINER_REGISTRY

logger = logging.getLogger(__name__)


def build_trainer(cfg):
    """Instantiate ``TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)``."""
    trainer_cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    if cfg.VERBOSE:
        logger.info(f"Loading trainer: {cfg.TRAINER.NAME}")
    return trainer_cls(cfg)
