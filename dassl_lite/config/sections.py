"""Options set in a trainer section that the chosen trainer never reads.

Every trainer's section (``TRAINER.COOP``, ``TRAINER.KGCOOP``, ...) exists in every config, so
that upstream YAMLs of any trainer merge unchanged; the price is that ``--trainer KgCoOp ...
TRAINER.COOP.N_CTX 8`` merges without complaint while KgCoOp reads ``TRAINER.KGCOOP.N_CTX``.
:func:`unread_section_warnings` names such options: a key the user set (in a YAML file or on the
command line) to a value other than its default, in a section the trainer does not read.

A trainer says which sections it reads with ``config_sections`` (a tuple of section names, e.g.
``("COOP",)``); without it, the section of its ``precision_key`` (``TRAINER.COOP.PREC`` ->
``COOP``) is the one. A trainer that states neither is not checked.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from yacs.config import CfgNode as CN


def trainer_sections(trainer_cls: Any) -> Optional[Tuple[str, ...]]:
    """The ``TRAINER.<X>`` section names ``trainer_cls`` reads; None when it does not say."""
    sections = getattr(trainer_cls, "config_sections", None)
    if sections is not None:
        return tuple(sections)
    key = getattr(trainer_cls, "precision_key", None) or ""
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "TRAINER":
        return (parts[1],)
    return None


def changed_keys(before: CN, after: CN, prefix: str = "") -> List[str]:
    """Dotted leaf keys (``prefix`` + path) whose value in ``after`` differs from ``before``."""
    keys = []
    for k, v in after.items():
        old = before.get(k) if isinstance(before, dict) else None
        if isinstance(v, dict):
            keys.extend(changed_keys(old if isinstance(old, dict) else CN(), v, f"{prefix}{k}."))
        elif k not in before or old != v:
            keys.append(f"{prefix}{k}")
    return keys


def _leaf(cfg: CN, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def unread_section_warnings(cfg: CN, defaults: CN, trainer: str,
                            sections: Optional[Sequence[str]],
                            sources: Dict[str, str]) -> List[str]:
    """One warning per ``TRAINER.<X>.<KEY>`` of ``sources`` (key -> where the user set it) whose
    value in ``cfg`` differs from ``defaults`` while ``trainer`` reads only ``sections``."""
    if sections is None:
        return []
    read = [f"TRAINER.{s}" for s in sections]
    warnings = []
    for key, source in sources.items():
        section, _, leaf = key.rpartition(".")
        if (not key.startswith("TRAINER.") or section.count(".") != 1 or section in read
                or _leaf(cfg, key) == _leaf(defaults, key)):
            continue
        where = " and ".join(read) if read else "no TRAINER section"
        there = [f"{s}.{leaf}" for s in read if leaf in _leaf(cfg, s)]
        hint = (f"; set {there[0]} instead (now {_leaf(cfg, there[0])!r})" if there else
                f" (no {leaf} there)" if read else "")
        warnings.append(f"{key} = {_leaf(cfg, key)!r} ({source}) is not read by trainer "
                        f"{trainer}, which reads {where}{hint}")
    return warnings
