"""The Numba back end: a traced graph -> an `Executable` (runtime/execution/executable.py).

`BACKENDS["numba"]` (compiler/api.py) is `build_numba_indexed`: it looks the traced graph up
in the cache index first (a new process with a warm cache skips the passes and codegen, and
never imports networkx), else runs the passes and code generation (compiler/codegen/), then
loads the generated modules through the cache (runtime/execution/cache.py). The executing
runtime imports nothing from the compiler: this module is where the two meet.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path

from ir.graph import Graph
from runtime.execution.cache import (
    KERNEL_PREFIX,
    environment_stamp,
    load_generated,
    load_module,
    store_generated,
)
from runtime.execution.executable import Executable


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of chainjit's compiler, IR and runtime sources: any change re-runs the passes."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(environment_stamp().encode())
    for package in ("compiler", "ir", "runtime"):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def codegen_settings() -> list:
    """The codegen modules' tunables (UPPER_CASE scalars) as they are now: tests change
    some (`PARALLEL_MIN_SIZE`), and the index must not hand back code built with others."""
    import compiler.codegen.buffers
    import compiler.codegen.loops
    import compiler.codegen.ops

    modules = (compiler.codegen.loops, compiler.codegen.ops, compiler.codegen.buffers)
    return [(m.__name__, k, v) for m in modules for k, v in sorted(vars(m).items())
            if k.isupper() and isinstance(v, (bool, int, float, str))]


def graph_key(graph, *extra) -> str:
    """The index key of a traced graph: its text, its constants' values, `extra` (donation
    options), the codegen settings and the code fingerprint."""
    from ir.ops import Op
    from ir.printer import format_graph

    digest = hashlib.sha256(code_fingerprint().encode())
    digest.update(repr(codegen_settings()).encode())
    digest.update(format_graph(graph).encode())
    digest.update(repr(extra).encode())
    for node in graph.nodes:
        if node.op is Op.CONSTANT:
            value = node.params["value"]
            digest.update(f"{value.dtype}{value.shape}".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()[:32]


def build_numba(graph: Graph, donate: dict[int, int] | None = None,
                guard: int | None = None) -> Executable:
    """Generate the driver for a lowered graph, load it through the cache and wrap it (Numba
    compiles on the first call)."""
    from compiler.codegen import generate

    return _load(graph, generate(graph, donate, guard))


def build_numba_indexed(traced_graph: Graph, lower: Callable[[], Graph],
                        donate: dict[int, int], guard: int | None) -> Executable:
    """BACKENDS["numba"]: as `build_numba`, but a graph traced before (in any process, same
    chainjit code) skips the passes and codegen: the module is found through the cache index."""
    found = load_indexed(traced_graph, donate, guard)
    if found is not None:
        return found
    from compiler.codegen import generate

    generated = generate(lower(), donate, guard)
    store_generated(index_key(traced_graph, donate, guard), generated)
    return _load(traced_graph, generated)


def load_indexed(traced_graph: Graph, donate: dict[int, int],
                 guard: int | None) -> Executable | None:
    """The executable of a graph traced before (its modules loaded, nothing compiled yet), or
    None when the cache index does not have it."""
    generated = load_generated(index_key(traced_graph, donate, guard))
    return None if generated is None else _load(traced_graph, generated)


def index_key(traced_graph: Graph, donate: dict[int, int], guard: int | None) -> str:
    return graph_key(traced_graph, sorted(donate.items()), guard)


def _load(graph: Graph, generated) -> Executable:
    """Import the kernel modules, then the driver that calls them (runtime/execution/linking.py)."""
    for name, text in generated.kernels.items():
        module = load_module(text, KERNEL_PREFIX)
        if module.__name__ != name:
            raise AssertionError(f"kernel {name} was loaded as {module.__name__}")
    return Executable(graph, generated, load_module(generated.source).driver)
