"""The config files that ship with dassl_lite, and config paths that name them.

The wheel carries ``configs/`` inside the package (``dassl_lite/configs/``; a checkout has it
beside ``dassl_lite/``). Commands copied from the docs say ``--config-file
configs/trainers/CoOp/vit_b16.yaml``: from a folder without such a file, a relative path that
names a bundled file (``configs/datasets/oxford_pets.yaml``, ``datasets/oxford_pets.yaml``; a
trainer folder also through a registered parent's, ``trainers/MultiModalAdapter/`` as ``MMA/``)
resolves to it, and the caller logs which file was used. A path that names nothing bundled is an
error listing the nearest bundled names.
"""
from __future__ import annotations

import difflib
import glob
import os
from typing import List, Optional, Tuple

from ..apps import configs_dir
from ..registry import TRAINER_REGISTRY
from .merge import ConfigError

PREFIX = "configs"  # bundled files are shown as configs/<datasets|trainers>/...


def bundled_root() -> Optional[str]:
    """The bundled ``configs/`` folder (None when this install has none)."""
    try:
        return configs_dir()
    except FileNotFoundError:
        return None


def _shown(path: str, root: str) -> str:
    return "/".join([PREFIX, *os.path.relpath(path, root).split(os.sep)])


def trainer_config_folders(trainer: str, config_dir: str) -> List[str]:
    """Where the configs of ``trainer`` live: ``config_dir/<trainer>/``, then the folders of the
    registered trainers it subclasses that read the same config section (same ``precision_key``:
    ``ZeroshotCLIP2`` uses ``ZeroshotCLIP``'s configs; ``KgCoOp`` does not use CoOp's, whose
    ``TRAINER.COOP`` values it would silently ignore)."""
    names = [trainer]
    if trainer in TRAINER_REGISTRY:
        own = TRAINER_REGISTRY.get(trainer)
        for cls in own.__mro__[1:]:
            if (cls.__name__ in TRAINER_REGISTRY and TRAINER_REGISTRY.get(cls.__name__) is cls
                    and getattr(cls, "precision_key", None) == getattr(own, "precision_key", None)):
                names.append(cls.__name__)
    return [os.path.join(config_dir, n) for n in names]


def bundled_configs(trainer: str = "") -> List[str]:
    """The bundled config files as ``configs/...`` names: every dataset and trainer config, or,
    for ``trainer``, the trainer configs it can use (its folder, then its parents' folders)."""
    root = bundled_root()
    if root is None:
        return []
    if not trainer:
        paths = glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True)
        return sorted(_shown(p, root) for p in paths)
    names = []
    for folder in trainer_config_folders(trainer, os.path.join(root, "trainers")):
        names += sorted(_shown(p, root) for p in glob.glob(os.path.join(folder, "*.yaml")))
    if not names:
        known = sorted(os.path.basename(os.path.dirname(n)) for n in
                       glob.glob(os.path.join(root, "trainers", "*", "*.yaml")))
        known = sorted(set(known))
        close = difflib.get_close_matches(trainer, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"No bundled configs for trainer {trainer!r}.{hint} Trainers with "
                          f"bundled configs: {', '.join(known)}")
    return names


def _bundled_part(path: str) -> Optional[str]:
    """The part of a relative ``path`` that would name a bundled file: what follows its last
    ``configs`` folder, or the whole path when it starts with ``datasets/`` or ``trainers/``."""
    if os.path.isabs(path):
        return None
    parts = [p for p in os.path.normpath(path).replace(os.sep, "/").split("/") if p not in ("", ".")]
    if PREFIX in parts:
        parts = parts[len(parts) - parts[::-1].index(PREFIX):]
    elif not parts or parts[0] not in ("datasets", "trainers"):
        return None
    return "/".join(parts) if parts and ".." not in parts else None


def nearest_bundled(path: str, n: int = 5, trainer: str = "") -> List[str]:
    """Up to ``n`` bundled ``configs/...`` names whose file names are closest to ``path``'s,
    those in the folder ``path`` names (``datasets``, ``trainers/CoOp``) first, else those of
    ``trainer`` (the run's ``--trainer``) first."""
    names = bundled_configs()
    part = _bundled_part(path) or os.path.basename(path)
    folder, _, stem = part.rpartition("/")
    folder = folder or (f"trainers/{trainer}" if trainer else "")
    stem = os.path.splitext(stem)[0]
    stems = {m: os.path.splitext(m.rsplit("/", 1)[-1])[0] for m in names}
    close = difflib.get_close_matches(stem, sorted(set(stems.values())), n=len(stems), cutoff=0.6)
    order = {s: i for i, s in enumerate(close)}
    near = [m for m in names if stems[m] in order]
    near.sort(key=lambda m: (not folder or not m.startswith(f"{PREFIX}/{folder}/"),
                             order[stems[m]], m))
    return near[:n]


def _bundled_file(part: str, root: str) -> Optional[str]:
    """The bundled file ``part`` names; for ``trainers/<T>/<file>``, else ``<file>`` in the folder
    of a registered trainer that T subclasses with the same config section (upstream MMA's
    ``trainers/MultiModalAdapter/vit_b16_ep5.yaml`` is ``trainers/MMA/vit_b16_ep5.yaml``)."""
    direct = os.path.join(root, *part.split("/"))
    if os.path.isfile(direct):
        return direct
    pieces = part.split("/")
    if len(pieces) == 3 and pieces[0] == "trainers":
        for folder in trainer_config_folders(pieces[1], os.path.join(root, "trainers"))[1:]:
            if os.path.isfile(os.path.join(folder, pieces[2])):
                return os.path.join(folder, pieces[2])
    return None


def find_config(path: str, flag: str = "--config-file",
                trainer: str = "") -> Tuple[str, Optional[str]]:
    """``(path to read, notice)``: ``path`` itself when it is a file (notice None); else the
    bundled file it names, with the notice saying so; else a ConfigError naming ``flag``, the
    folder it was looked for in and the nearest bundled names (``trainer``'s first when the path
    names no folder)."""
    if os.path.isfile(path):
        return path, None
    part, root = _bundled_part(path), bundled_root()
    bundled = _bundled_file(part, root) if part and root else None
    if bundled:
        return bundled, (f"{flag} {path}: not in {os.getcwd()}; using the bundled config "
                         f"{bundled}")
    where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
    near = nearest_bundled(path, trainer=trainer)
    hint = (f"nearest bundled configs: {', '.join(near)}" if near
            else "no bundled config has a similar name")
    raise ConfigError(f"{flag} {path} does not exist{where}; {hint} (all of them: "
                      f"--list-configs [TRAINER])")
