"""The core's layer order, read from every import of src/medssl (top-level and inside functions, via ast).

    errors / registry / home  <  plan / io  <  data / models  <  planning / hub / inference  <  ssl / train
    <  cli / demo

A module may import from its own layer or a lower one; an import against the order (a back-edge) or an
import cycle between modules fails with the offending edges named. Top-level modules not in the order are
placed explicitly below (``colors``, ``events``: beside ``errors``; the package ``__init__``: with ``cli``).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

SRC = Path(__file__).resolve().parent.parent / "src" / "medssl"
ORDER = [("errors", "registry", "home", "colors", "events"), ("plan", "io"), ("data", "models"),
         ("planning", "hub", "inference"), ("ssl", "train"), ("cli", "demo", "__init__", "__main__")]
LAYER = {name: rank for rank, names in enumerate(ORDER) for name in names}
Edge = Tuple[str, str, int]  # (importing module, imported module, line)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool, modules: Set[str]) -> List[str]:
    """``from x import a, b``: the modules ``x.a``, ``x.b`` where they are modules, else ``x`` itself."""
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    subs = [f"{base}.{alias.name}" for alias in node.names]
    return [name for name in subs if name in modules] or [base]


def imports(path: Path, modules: Set[str]) -> Iterator[Tuple[str, int]]:
    """Every medssl module ``path`` imports, anywhere in the file (inside functions too)."""
    module, is_package = module_name(path), path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = _resolve(node, module, is_package, modules)
        for name in names:
            if name == "medssl" or name.startswith("medssl."):
                yield name, node.lineno


def graph() -> Tuple[Set[str], List[Edge]]:
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    edges = []
    for module, path in files.items():
        for target, line in imports(path, set(files)):
            if target in files and target != module and target != "medssl":
                edges.append((module, target, line))
    return set(files), edges


def top(module: str) -> str:
    """``medssl.hub.pretrained`` -> ``hub``; the package ``medssl`` itself -> ``__init__``."""
    return module.split(".")[1] if "." in module else "__init__"


def layer(module: str) -> int:
    top_name = top(module)
    assert top_name in LAYER, f"{module}: top-level module {top!r} has no layer; add it to ORDER in {__file__}"
    return LAYER[top_name]


def back_edges(edges: List[Edge]) -> List[str]:
    return [f"{a}:{line} imports {b}" for a, b, line in edges if layer(b) > layer(a)]


def cycles(nodes: Set[str], edges: List[Edge]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    succ: Dict[str, Set[str]] = {n: set() for n in nodes}
    for a, b, _ in edges:
        succ[a].add(b)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return out


def test_no_import_goes_against_the_layer_order():
    _, edges = graph()
    bad = back_edges(edges)
    assert not bad, f"{len(bad)} import(s) against the layer order:\n" + "\n".join(bad)


def test_no_cycle_between_parts_of_one_layer():
    """``ssl`` and ``train`` share a layer: one may use the other, not both (nor ``planning``/``hub``/...)."""
    nodes, edges = graph()
    parts = {top(n) for n in nodes}
    part_edges = {(top(a), top(b), 0) for a, b, _ in edges if top(a) != top(b)}
    found = cycles(parts, [(a, b, line) for a, b, line in part_edges])
    assert not found, "parts that import each other:\n" + "\n".join(
        " <-> ".join(c) + ": " + "; ".join(f"{a}:{line} imports {b}" for a, b, line in edges
                                         if {top(a), top(b)} <= set(c) and top(a) != top(b) and layer(b) >= layer(a))
        for c in found)


def test_no_import_cycles():
    nodes, edges = graph()
    found = cycles(nodes, edges)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)
