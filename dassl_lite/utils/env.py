"""Environment information logged at the start of every run (versions, git revision, devices)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import Dict, Optional

import torch

from .. import __version__


def git_revision(path: Optional[str] = None) -> str:
    """``<sha>`` (plus ``-dirty`` with uncommitted changes) of the checkout holding ``path``."""
    cwd = path or os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True,
            timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def env_info() -> Dict[str, str]:
    """Versions and devices as a flat dict (also written into results and checkpoints)."""
    import torchvision

    info = {
        "dassl_lite": __version__,
        "git_revision": git_revision(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda_available": str(torch.cuda.is_available()),
        "num_threads": str(torch.get_num_threads()),
    }
    if torch.cuda.is_available():
        info["cuda"] = str(torch.version.cuda)
        info["gpus"] = ", ".join(
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        )
    return info


def collect_env_info() -> str:
    """:func:`env_info` as aligned text lines."""
    info = env_info()
    width = max(len(k) for k in info)
    return "\n".join(f"{k:<{width}} : {v}" for k, v in info.items())
