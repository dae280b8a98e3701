"""From one trace to an executable: the backends (`BACKENDS`), donation for a backend without
it, the memory check, and builds in the background (the interpreter answers meanwhile).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from compiler.backend import build_numba_indexed, load_indexed
from ir.graph import Graph
from ir.interpreter import evaluate
from ir.printer import format_graph
from runtime.execution.background import BackgroundBuild, wait_requested
from runtime.execution.compile_worker import compile_elsewhere

if TYPE_CHECKING:  # compiler/api.py imports this module
    from compiler.api import Compiled
    from compiler.arguments import Traced


def interpreter_executable(traced_graph: Graph, lower: Callable[[], Graph],
                            donate: dict[int, int], guard: int | None):
    graph = lower()
    run = lambda leaves: evaluate(graph, leaves)  # noqa: E731
    return _donating(run, donate, guard) if donate else run


def _donating(run: Callable[[list], list], donate: dict[int, int], guard: int | None):
    """Donation for a backend without it: copy each donated output into its input leaf."""
    def call(leaves: list) -> list:
        outputs = list(run(leaves))
        if guard is None or np.isfinite(outputs[guard]):
            for o, i in donate.items():
                if isinstance(leaves[i], np.ndarray) and outputs[o] is not leaves[i]:
                    np.copyto(leaves[i], outputs[o])
                    outputs[o] = leaves[i]
        return outputs

    return call


# backend name -> builder(traced graph, lower: () -> fused graph, donate {output leaf: input
# leaf}, guard) -> executable(leaves) -> outputs. The traced graph lets a backend find earlier
# work by it (numba's cache index, compiler/codegen/driver.py) before paying for the passes.
Builder = Callable[[Graph, Callable[[], Graph], dict, "int | None"], Callable[[list], list]]
BACKENDS: dict[str, Builder] = {
    "interpreter": interpreter_executable,
    "numba": build_numba_indexed,
}


def build_executable(compiled: Compiled, traced: Traced, leaves: list | None = None):
    """The executable for one trace; with `compiled.wait` false (and code not yet in the disk
    cache) a `BackgroundBuild` answering on the interpreter until the compiled one is ready."""
    backend = compiled.backend if compiled.backend in BACKENDS else "interpreter"
    if backend == "numba" and leaves is not None and not wait_requested(compiled.wait):
        return _build_in_background(compiled, traced, leaves)
    return _build(compiled, traced, backend)


def _build(compiled: Compiled, traced: Traced, backend: str, executable=None):
    """The executable (built here unless given), after the memory check, with its paths."""
    from compiler.memory_check import check_allocations

    check_allocations(traced.graph, lambda: compiled.lowered(traced, "fused"),
                      compiled.__name__, traced.donate, compiled.donate_guard)
    if executable is None:
        executable = BACKENDS[backend](traced.graph, lambda: compiled.lowered(traced, "fused"),
                                       traced.donate, compiled.donate_guard)
    if hasattr(executable, "paths"):  # argument errors name the user's pytree paths
        executable.paths = list(traced.in_paths)
    if os.environ.get("CHAINJIT_DUMP_DIR"):
        from compiler import pipeline
        from runtime.execution.cache import dump_build

        stages = {s: format_graph(compiled.lowered(traced, s))
                  for s in ("traced", *pipeline.STAGES)}
        dump_build(compiled.__name__, stages, getattr(executable, "source", None))
    return executable


def _build_in_background(compiled: Compiled, traced: Traced, leaves: list):
    """The compiled executable at once when the disk cache holds all of it; else a
    `BackgroundBuild`: the passes and codegen on a thread, Numba in a child process
    (runtime/execution/compile_worker.py), the traced graph on the reference interpreter
    meanwhile (no passes stand before the first result)."""
    found = load_indexed(traced.graph, traced.donate, compiled.donate_guard)
    if found is not None and found.prepare(found.argument_types(leaves), load_only=True):
        return _build(compiled, traced, "numba", found)
    # stand-ins of the leaves' types: the interpreter may write the real ones (donation)
    example = [np.empty_like(x) if isinstance(x, np.ndarray) else x for x in leaves]

    def build():  # the modules `found` loaded are the ones to compile: not loaded again
        executable = _build(compiled, traced, "numba", found)
        types = executable.argument_types(example)
        # Numba compiled in a process of its own (the interpreter here does not slow it),
        # then loaded from the disk cache; in this one when that fails
        if not (compile_elsewhere(executable.driver, executable.kernel_modules, types)
                and executable.prepare(types, load_only=True)):
            executable.prepare(types)
        return executable

    fallback = interpreter_executable(traced.graph, lambda: traced.graph, traced.donate,
                                       compiled.donate_guard)
    return BackgroundBuild(compiled.__name__, build, fallback)
