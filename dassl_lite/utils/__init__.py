"""Logging, meters, seeding, atomic IO and environment information."""
from .env import collect_env_info, env_info, git_revision
from .io import atomic_torch_save, atomic_write, atomic_write_json, atomic_write_text
from .logger import setup_logger
from .meters import AverageMeter, MetricMeter
from .seed import get_rng_state, set_random_seed, set_rng_state

__all__ = [
    "AverageMeter", "MetricMeter", "atomic_torch_save", "atomic_write", "atomic_write_json",
    "atomic_write_text", "collect_env_info", "env_info", "get_rng_state", "git_revision",
    "set_random_seed", "set_rng_state", "setup_logger",
]
