"""The back end's imports run one way (compile-latency issue): code generation, the Numba
libraries, compiler/backend.py and the executing part of the runtime form no import circle,
counting imports inside functions, and that runtime part imports nothing from the compiler."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_INITS = {"ir", "compiler", "runtime", "compiler.codegen", "compiler.kernels",
                 "compiler.passes"}
BACK_END = ("compiler.codegen", "compiler.kernels", "compiler.backend")
EXECUTING = ("runtime.executable", "runtime.cache", "runtime.linking", "runtime.background",
             "runtime.blas")


def import_graph() -> nx.DiGraph:
    modules = {}
    for package in ("ir", "compiler", "runtime"):
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            graph.add_edges_from((name, t) for t in targets if t in modules and t != name)
    return graph


def test_no_import_circle_passes_through_the_back_end():
    graph = import_graph()
    graph.remove_nodes_from(PACKAGE_INITS)  # `from compiler import x` reaches x, not a circle
    circles = [c for c in nx.simple_cycles(graph)
               if any(m.startswith(BACK_END + EXECUTING) for m in c)]
    assert not circles, circles[:5]


def test_the_executing_runtime_imports_nothing_from_the_compiler():
    graph = import_graph()
    for module in EXECUTING:
        found = [t for t in graph.successors(module) if t.startswith("compiler")]
        assert not found, (module, found)
