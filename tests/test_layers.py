"""Imports between dassl_lite's own modules sit at the top of their file and point down the
layers (the design's "imports point down only"); a module that needs something from a higher
layer is a sign that the piece belongs lower (see ``utils/distributed.py``, ``utils/image.py``,
``config/differences.py``, ``clip/errors.py``).

Optional third-party packages may still be imported inside functions; only imports of
``dassl_lite`` modules are checked.
"""
from __future__ import annotations

import ast
import os
from typing import Dict, List, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "dassl_lite"

# Top to bottom, as in the design's "Layers" section. A module may import from a lower layer,
# and from its own package (folder) when that makes no import cycle.
LAYERS: List[Tuple[str, ...]] = [
    ("protocols", "predict"),  # predict rebuilds runs through cli
    ("cli", "commands"),
    ("engine",),
    ("data",),  # engine uses data; data uses neither engine nor protocols
    ("evaluation",),
    ("clip", "config", "optim", "plots"),
    ("backbones", "registry", "utils"),
    ("",),  # the package itself (``__version__``)
    ("errors", "apps"),
]
RANK: Dict[str, int] = {part: len(LAYERS) - i for i, parts in enumerate(LAYERS) for part in parts}


def module_sources(package_dir: str) -> Dict[str, str]:
    """``{dotted module name: source}`` for every ``.py`` file under ``package_dir``."""
    parent = os.path.dirname(package_dir)
    sources = {}
    for folder, _, files in os.walk(package_dir):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, parent)[:-3].replace(os.sep, ".")
                with open(path, encoding="utf-8") as f:
                    sources[dotted.removesuffix(".__init__")] = f.read()
    return sources


def _is_package(module: str, modules: Dict[str, str]) -> bool:
    return any(m.startswith(module + ".") for m in modules)


def _targets(node: ast.AST, module: str, modules: Dict[str, str]) -> List[str]:
    """The package modules an import statement loads (``from . import x`` names x's module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".")
        if not _is_package(module, modules):
            base = base[:-1]
        base = base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != PACKAGE:
        return []
    return list(dict.fromkeys(f"{target}.{a.name}" if f"{target}.{a.name}" in modules
                              else target for a in node.names))


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _top_level_nodes(tree: ast.Module) -> Set[int]:
    """Statements at module level (including those under ``if TYPE_CHECKING:``)."""
    nodes = set()
    for stmt in tree.body:
        nodes.add(id(stmt))
        if (isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Name)
                and stmt.test.id == "TYPE_CHECKING"):
            nodes.update(id(s) for s in stmt.body)
    return nodes


def import_graph(modules: Dict[str, str]) -> Tuple[Dict[str, Set[str]], List[str]]:
    """(module-level edges between package modules, problems: lazy imports and imports that
    point up or sideways across layers)."""
    edges: Dict[str, Set[str]] = {m: set() for m in modules}
    problems = []
    for module, source in sorted(modules.items()):
        tree = ast.parse(source, filename=module)
        top = _top_level_nodes(tree)
        for node in ast.walk(tree):
            for target in _targets(node, module, modules):
                where = f"{module} line {node.lineno}: imports {target}"
                src, dst = _layer(module), _layer(target)
                for layer in (src, dst):
                    if layer not in RANK:
                        problems.append(f"{where}: {layer!r} has no place in LAYERS")
                if src in RANK and dst in RANK and src != dst and RANK[dst] >= RANK[src]:
                    problems.append(f"{where}: {dst or PACKAGE!r} is not below {src!r}")
                if id(node) not in top:
                    problems.append(f"{where} inside a function or block (move it to the top)")
                else:
                    edges[module].add(target)
    return edges, problems


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Import cycles among modules of one package folder (``a -> b -> a``)."""
    found, done = [], set()

    def visit(module: str, path: List[str]) -> None:
        for target in sorted(edges.get(module, ())):
            if _layer(target) != _layer(module) or target in done:
                continue
            if target in path:
                found.append(path[path.index(target):] + [target])
            else:
                visit(target, path + [target])
        done.add(module)

    for module in sorted(edges):
        visit(module, [module])
    # a package's __init__ importing its modules, which import the package, is fine
    return [c for c in found if not any(_is_package(m, edges) for m in c)]


def check(modules: Dict[str, str]) -> List[str]:
    edges, problems = import_graph(modules)
    return problems + [" -> ".join(c) + ": import cycle" for c in cycles(edges)]


def test_every_package_import_is_at_the_top_and_points_down():
    modules = module_sources(os.path.join(ROOT, PACKAGE))
    assert len(modules) > 50 and "dassl_lite.utils.distributed" in modules
    assert check(modules) == []


FAKE = {
    "dassl_lite": "from . import apps\n",
    "dassl_lite.apps": "",
    "dassl_lite.utils": "",
    "dassl_lite.utils.io": "import os\n",
    "dassl_lite.data": "",
    "dassl_lite.data.loader": "from ..utils.io import x\n",
    "dassl_lite.engine": "",
    "dassl_lite.engine.dist": "from ..data.loader import y\n",
    "dassl_lite.clip": "",
    "dassl_lite.clip.a": "from .b import B\n",
    "dassl_lite.clip.b": "import torch\n",
}


def test_the_check_accepts_a_clean_tree_and_names_each_kind_of_problem():
    assert check(FAKE) == []
    bad = dict(FAKE)
    bad["dassl_lite.data.loader"] = ("from ..utils.io import x\n\n\ndef f():\n"
                                     "    from ..engine.dist import rank\n    import numpy\n")
    bad["dassl_lite.utils.io"] = "from ..data import loader\n"
    bad["dassl_lite.widgets"] = ""
    bad["dassl_lite.clip.a"] = "from .b import B\n"
    bad["dassl_lite.clip.b"] = "import dassl_lite.clip.a\n"
    assert check(bad) == [
        "dassl_lite.data.loader line 5: imports dassl_lite.engine.dist: 'engine' is not below "
        "'data'",
        "dassl_lite.data.loader line 5: imports dassl_lite.engine.dist inside a function or "
        "block (move it to the top)",
        "dassl_lite.utils.io line 1: imports dassl_lite.data.loader: 'data' is not below 'utils'",
        "dassl_lite.clip.a -> dassl_lite.clip.b -> dassl_lite.clip.a: import cycle",
    ]
    bad["dassl_lite.widgets"] = "from .apps import x\n"
    assert "dassl_lite.widgets line 1: imports dassl_lite.apps: 'widgets' has no place in " \
           "LAYERS" in check(bad)


@pytest.mark.parametrize("old, new, names", [
    ("dassl_lite.engine.distributed", "dassl_lite.utils.distributed",
     ["barrier", "get_rank", "get_world_size", "is_distributed", "is_main_process",
      "main_process_first", "sampler_seed", "shard_sampler"]),
    ("dassl_lite.data.data_manager", "dassl_lite.utils.image",
     ["read_image", "to_rgb8", "ImageReadError"]),
    ("dassl_lite.data", "dassl_lite.utils.image", ["read_image", "ImageReadError"]),
    ("dassl_lite.data.errors", "dassl_lite.utils.image", ["ImageReadError"]),
    ("dassl_lite.protocols.jobs", "dassl_lite.config.differences",
     ["config_differences", "IGNORED_KEYS"]),
    ("dassl_lite.engine.precision", "dassl_lite.config.validate", ["PRECISIONS"]),
    ("dassl_lite.clip.loader", "dassl_lite.clip.errors",
     ["CLIPWeightsNotFoundError", "CLIPChecksumError"]),
    ("dassl_lite.clip", "dassl_lite.clip.errors",
     ["CLIPWeightsNotFoundError", "CLIPChecksumError"]),
])
def test_moved_pieces_stay_importable_from_their_old_modules(old, new, names):
    import importlib

    old_mod, new_mod = importlib.import_module(old), importlib.import_module(new)
    for name in names:
        assert getattr(old_mod, name) is getattr(new_mod, name), f"{old}.{name}"
