"""The package's shape, checked from its own imports: layers point one way, no cycles (function-local
imports included), small modules.

Every dp/ module is parsed with ``ast``; ``import`` and ``from`` statements (relative ones and those
inside functions included) are resolved to dp modules. Imports that run (at module level or inside a
function; not those under ``if TYPE_CHECKING:``) must not form a cycle;
no import, wherever it sits, may go from a lower rank to a higher one or across two packages of the
same rank. The ranks follow the pipeline: collect -> store -> train -> runtime -> export and deploy.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "dp"

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

# (rank, group): lower ranks may not import higher ones; two groups of the same rank may not
# import each other. The longest matching prefix wins.
RANKS: dict[str, tuple[int, str]] = {
    "dp.errors": (0, "foundation"),
    "dp.stats": (0, "foundation"),
    "dp.files": (0, "foundation"),
    "dp.config": (0, "foundation"),
    "dp.config_docs": (0, "foundation"),
    "dp.devices": (0, "foundation"),
    "dp.cli_args": (0, "foundation"),
    "dp.data": (1, "data"),
    "dp.link": (1, "link"),
    "dp.sim": (2, "sim"),
    "dp.collect": (3, "collect"),
    "dp.models": (4, "model"),
    "dp.diffusion": (4, "model"),
    "dp.train": (5, "train"),
    "dp.infer": (6, "infer"),
    "dp.export": (7, "export"),
    "dp.deploy": (7, "deploy"),
}

# Entry points and tools that sit on top of the whole path and may import anything.
UNRANKED = ("dp", "dp.eval", "dp.testing", "dp.cli", "dp.quickstart", "dp.launch", "dp.__main__",
            "dp.collect.collect_cmd", "dp.collect.from_policy")  # `dp collect --policy` loads policies


@dataclass(frozen=True)
class Edge:
    """One import of a dp module by another."""

    source: str
    target: str
    line: int
    runtime: bool  # False for an import under ``if TYPE_CHECKING:``


def module_name(path: Path, root: Path = ROOT) -> str:
    """The dotted name of a file under ``root`` (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks (never run: type hints only)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            found |= {id(n) for stmt in node.body for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return found


def _resolve(node: ast.ImportFrom, source: str, is_package: bool, modules: set[str]) -> list[str]:
    """The dp modules a ``from`` import names: ``from pkg import sub`` is the submodule when one exists."""
    if node.level:
        base = source.split(".") if is_package else source.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    targets = []
    for alias in node.names:
        sub = f"{prefix}.{alias.name}"
        targets.append(sub if sub in modules else prefix)
    return targets


def import_graph(root: Path = ROOT) -> list[Edge]:
    """Every import between dp modules under ``root``, resolved to the imported module."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    edges: set[Edge] = set()
    for source, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        hints = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = _resolve(node, source, path.name == "__init__.py", modules)
            else:
                continue
            for target in targets:
                while target and target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != source:
                    edges.add(Edge(source, target, node.lineno, id(node) not in hints))
    return sorted(edges, key=lambda e: (e.source, e.line, e.target))


def rank_of(module: str) -> tuple[int, str] | None:
    """The (rank, group) of a module, or None for the unranked entry points."""
    for name in UNRANKED:
        if module == name or (name != "dp" and module.startswith(name + ".")):
            return None
    best = max((p for p in RANKS if module == p or module.startswith(p + ".")), key=len, default=None)
    if best is None:
        raise KeyError(f"{module} has no rank: add its package to RANKS or UNRANKED")
    return RANKS[best]


def layer_violations(edges: list[Edge]) -> list[str]:
    """Imports from a lower rank into a higher one, or across two groups of the same rank."""
    bad = []
    for e in edges:
        src, dst = rank_of(e.source), rank_of(e.target)
        if src is None or dst is None:
            if dst is None and src is not None:
                bad.append(f"{e.source}:{e.line} imports entry point {e.target}")
            continue
        if dst[0] > src[0]:
            bad.append(f"{e.source}:{e.line} ({src[1]}, rank {src[0]}) imports {e.target} ({dst[1]}, rank {dst[0]})")
        elif dst[0] == src[0] and dst[1] != src[1]:
            bad.append(f"{e.source}:{e.line} ({src[1]}) imports {e.target} ({dst[1]}), a sibling of the same rank")
    return bad


def import_cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected groups (size > 1) of the import graph (Tarjan): every import that runs, at
    module level or inside a function (a function-local import hides a cycle, it does not remove it)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if e.runtime:
            graph.setdefault(e.source, set()).add(e.target)
            graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def oversized(root: Path = ROOT) -> tuple[list[str], list[str]]:
    """(modules over MAX_MODULE_LINES, functions over MAX_FUNCTION_LINES) under ``root``."""
    modules, functions = [], []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        name = module_name(path, root)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            modules.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    functions.append(f"{name}.{node.name}:{node.lineno}: {length} lines")
    return modules, functions


def test_every_module_has_a_rank():
    for path in ROOT.rglob("*.py"):
        rank_of(module_name(path))


def test_no_import_cycle():
    cycles = import_cycles(import_graph())
    assert not cycles, "module-level import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_imports_follow_the_layers():
    bad = layer_violations(import_graph())
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_module_over_the_limit():
    modules, _ = oversized()
    assert not modules, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(modules)


def test_no_function_over_the_limit():
    _, functions = oversized()
    assert not functions, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(functions)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "dp" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "dp"


def test_checker_catches_a_violating_package(tmp_path):
    # A fake package with a cycle (relative and absolute), a rank inversion hidden in a function,
    # an import across same-rank siblings, a long function and a long module.
    long_body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    root = _write(tmp_path, {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/store.py": "from . import shards\nfrom .layout import LAYOUT\n",
        "data/layout.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .store import Store\n",
        "data/shards.py": "import dp.data.store\n",
        "data/reader.py": "def f():\n    from dp.train.trainer import Trainer\n",
        "data/decode.py": "def g():\n    from dp.data.imports import h\n",
        "data/imports.py": "from dp.data.decode import g\n\ndef h():\n    pass\n",
        "data/wire.py": "from dp.link import protocol\n",
        "link/__init__.py": "",
        "link/protocol.py": "",
        "train/__init__.py": "",
        "train/trainer.py": "from dp.data.store import EpisodeStore\n\ndef long():\n" + long_body + "\n",
        "cli.py": "import dp.deploy.node\n" + "\n" * MAX_MODULE_LINES,
    })
    edges = import_graph(root)
    assert import_cycles(edges) == [["dp.data.decode", "dp.data.imports"], ["dp.data.shards", "dp.data.store"]]
    bad = layer_violations(edges)
    assert len(bad) == 2
    assert any("dp.data.reader:2" in b and "dp.train.trainer" in b for b in bad)
    assert any("dp.data.wire:1" in b and "sibling" in b for b in bad)
    # the TYPE_CHECKING import is an edge that never runs (no cycle with store), and an entry point may import anything
    assert not any(e.runtime for e in edges if e.source == "dp.data.layout")
    assert any(e.target == "dp.data.store" for e in edges if e.source == "dp.data.layout")
    modules, functions = oversized(root)
    assert modules == [f"dp.cli: {MAX_MODULE_LINES + 1} lines"]
    assert functions == [f"dp.train.trainer.long:3: {MAX_FUNCTION_LINES + 1} lines"]


def test_unknown_package_has_no_rank():
    with pytest.raises(KeyError):
        rank_of("dp.nowhere.module")
