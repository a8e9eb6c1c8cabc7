"""Configuration: Dassl-compatible defaults, per-trainer extenders and checked merging."""
from .defaults import _C
from .merge import (
    ConfigError,
    apply_config_extenders,
    get_cfg_default,
    merge_from_file,
    merge_from_list,
    register_bool_spelling,
    register_config_extender,
)

__all__ = [
    "ConfigError",
    "apply_config_extenders",
    "get_cfg_default",
    "merge_from_file",
    "merge_from_list",
    "register_bool_spelling",
    "register_config_extender",
]
