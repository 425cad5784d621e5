"""The package's shape (docs/architecture.md): every module imports, no import cycle, one direction.

Imports are read with ``ast`` from the source, so an import inside a function (a "late" import)
counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "segros"

# docs/architecture.md, bottom to top; a module may import only modules of a lower layer, or modules
# of its own subpackage (backbones.*, data.*, eval.*, train.*) without a cycle
LAYERS = {
    "segros": 0,
    "segros.paper": 1, "segros.rng": 1, "segros.shard": 1, "segros.presets": 1.5,
    "segros.grounding": 2, "segros.attention": 2, "segros.objectives": 2, "segros.supervision": 2.5,
    "segros.vocab": 3,
    "segros.data": 4, "segros.eval": 4,
    "segros.backbones": 5,
    "segros.store": 6,
    "segros.train": 7, "segros.inference": 7,
    "segros.pipeline": 8, "segros.paper_eval": 8.5,
    "segros.stats": 9, "segros.tables": 9.5,
    "segros.viz": 10, "segros.notebooks": 10.5, "segros.train.__main__": 10.5, "segros.lmms_model": 10.5,
}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = modules()


def resolve(name: str) -> str | None:
    """The module of ``MODULES`` that an imported dotted name lives in (a module or a name in one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str) -> set[str]:
    """Every segros module ``name`` imports, at any depth of its source."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            if t == "segros" or t.startswith("segros."):
                r = resolve(t)
                if r and r != name and not name.startswith(r + "."):  # a package's own parents load first anyway
                    found.add(r)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def layer(name: str) -> float:
    while name not in LAYERS:
        name = name.rpartition(".")[0]
    return LAYERS[name]


def subpackage(name: str) -> str:
    return ".".join(name.split(".")[:2])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_no_import_cycle():
    assert not cycles(GRAPH), cycles(GRAPH)


def test_the_cycle_check_sees_late_imports():
    """A function-level import closing a loop is a cycle (so the test above can fail)."""
    graph = {k: set(v) for k, v in GRAPH.items()}
    src = "def f():\n    from segros import pipeline\n"
    late = {resolve(t) for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom)
            for t in [n.module] + [f"{n.module}.{a.name}" for a in n.names]}
    graph["segros.store"] |= late  # the store would import the pipeline inside a function
    assert any("segros.store" in c and "segros.pipeline" in c for c in cycles(graph))


def test_every_layer_imports_only_layers_below_it():
    bad = [f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
           for src, dsts in GRAPH.items() for dst in dsts
           if subpackage(src) != subpackage(dst) and layer(dst) >= layer(src)]
    assert not bad, "\n".join(bad)


def test_every_module_has_a_layer():
    """A new top-level module must be placed in LAYERS (and in docs/architecture.md)."""
    unplaced = [name for name in MODULES if name not in LAYERS and subpackage(name) not in LAYERS]
    assert not unplaced, unplaced
