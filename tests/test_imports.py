"""Imports run one way: no import circle among the modules of ir/, compiler/ and runtime/,
counting imports inside functions (they run too, only later) and package `__init__`s, and not
counting imports only a type checker reads (`if TYPE_CHECKING:`). The executing part of the
runtime (runtime/execution/) imports nothing from the compiler nor from the training part
(runtime/training/), and no module attaches methods to a class of
another module."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ir", "compiler", "runtime")
RUNTIME = ROOT / "runtime"
# every module of runtime/execution/ (found, not listed, so a new one is covered too)
EXECUTING = tuple(sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for p in (RUNTIME / "execution").rglob("*.py")))


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(tree: ast.AST, package: str, lazy: bool = False):
    """The ImportFrom/Import statements that run (all but `if TYPE_CHECKING:` blocks), with
    relative imports made absolute against `package`. `lazy`: only those inside a module
    `__getattr__` (a package's lazy exports); else all the others."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from (s for child in node.orelse for s in imports_of(child, package, lazy))
            continue
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__" and \
                isinstance(tree, ast.Module):
            if lazy:
                yield from imports_of(node, package)
            continue
        if lazy:
            continue
        if isinstance(node, ast.Import):
            yield [a.name for a in node.names], None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            yield [base], [a.name for a in node.names]
        yield from imports_of(node, package)


def _targets(bases: list[str], names: list[str] | None, found: dict[str, Path],
             lazy: dict[str, set[str]]) -> set[str]:
    targets = set()
    for base in bases:
        parts = base.split(".")
        # importing a.b.c runs a/__init__, a/b/__init__, then a/b/c
        targets.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))
        for n in names or ():
            if f"{base}.{n}" in found:
                targets.add(f"{base}.{n}")
            else:  # a name of the package: maybe one of its lazy exports
                targets.update(lazy.get(base, ()))
    return targets


def import_graph() -> nx.DiGraph:
    """module -> the modules whose code importing it runs: `from p import m` reaches module
    p.m (and package p's __init__), `from p import name` reaches p, and the modules p's
    `__getattr__` imports for its lazy exports (runtime/__init__.py's `fit`, ...)."""
    found = modules()
    trees = {name: ast.parse(path.read_text()) for name, path in found.items()}
    packages = {name: name if path.name == "__init__.py" else name.rpartition(".")[0]
                for name, path in found.items()}
    lazy = {name: {t for bases, names in imports_of(trees[name], name, lazy=True)
                   for t in _targets(bases, names, found, {})}
            for name, path in found.items() if path.name == "__init__.py"}
    graph = nx.DiGraph()
    graph.add_nodes_from(found)
    for name in found:
        for bases, names in imports_of(trees[name], packages[name]):
            targets = _targets(bases, names, found, lazy)
            graph.add_edges_from((name, t) for t in targets if t in found and t != name)
    return graph


def test_no_import_circle_in_ir_compiler_and_runtime():
    graph = import_graph()
    # A package's __init__ runs before its submodules, so `compiler/__init__` importing
    # compiler.api, which imports compiler.tracing, is no circle: drop the edges from a
    # module into the packages that contain it (Python has them loaded already).
    graph.remove_edges_from([(a, b) for a, b in list(graph.edges) if a.startswith(b + ".")])
    circles = sorted(sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1)
    assert not circles, circles


def test_the_graph_sees_function_level_and_package_imports():
    graph = import_graph()
    assert graph.has_edge("compiler.api", "compiler.pipeline")  # inside Compiled.lowered
    assert graph.has_edge("compiler.nn", "compiler.primitives")  # `from compiler import x`
    assert graph.has_edge("compiler.api", "compiler.codegen")  # inside Compiled.source
    assert not graph.has_edge("ir.printer", "ir.graph")  # only under TYPE_CHECKING
    assert not graph.has_edge("runtime", "runtime.training.loop")  # a lazy export: not on import


def test_the_executing_runtime_imports_nothing_from_the_compiler_or_training():
    graph = import_graph()
    assert "runtime.execution.executable" in EXECUTING and len(EXECUTING) >= 10
    for module in EXECUTING:
        found = [t for t in nx.descendants(graph, module)
                 if t.startswith(("compiler", "runtime.training"))]
        assert not found, (module, found)


def test_the_runtime_split_and_its_public_names():
    """runtime/ holds only its two parts and the lazy public names; `from runtime import ...`
    gives the sub-packages' objects, and the import graph sees what each lazy export runs."""
    loose = sorted(p.name for p in RUNTIME.glob("*.py") if p.name != "__init__.py")
    assert not loose, f"modules directly in runtime/ (put them in execution/ or training/): {loose}"
    import runtime
    from runtime.execution import distributed
    from runtime.training import checkpoint, data_parallel, init, loop, optim, step

    expected = {"fit": loop.fit, "History": loop.History, "train_step": step.train_step,
                "TrainStep": step.TrainStep, "optim": optim, "init": init,
                "checkpoint": checkpoint, "data_parallel": data_parallel,
                "distributed": distributed}
    for name, value in expected.items():
        assert getattr(runtime, name) is value, name
        assert name in dir(runtime), name
    found = modules()
    tree = ast.parse(found["runtime"].read_text())
    lazy = {t for bases, names in imports_of(tree, "runtime", lazy=True)
            for t in _targets(bases, names, found, {})}
    assert {"runtime.training.loop", "runtime.training.step", "runtime.training.optim",
            "runtime.execution.distributed"} <= lazy, lazy


def test_no_class_gets_methods_attached_after_its_definition():
    """No `setattr(SomeClass, ...)` and no `SomeClass.attr = ...` for a class defined in the
    module or imported into it: a class's methods are in its body (as ArrayTracer's are),
    not installed later by whoever imports it."""
    found = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        classes |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                    for a in n.names if (a.asname or a.name)[:1].isupper()}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr":
                target = node.args[0] if node.args else None
                if isinstance(target, ast.Name) and target.id in classes:
                    found.append(f"{name}:{node.lineno} setattr({target.id}, ...)")
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                for target in getattr(node, "targets", [getattr(node, "target", None)]):
                    if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                            and target.value.id in classes):
                        found.append(f"{name}:{node.lineno} {target.value.id}.{target.attr} =")
    assert not found, found
