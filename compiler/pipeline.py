"""The pass pipeline, as literal tuples: read top to bottom, no hidden ordering.

A pass is a function `Graph -> Graph`. `lower(graph, stage)` runs the pipeline up to a named
stage; with `check=True` (as in tests) the verifier runs after every pass.
"""

from __future__ import annotations

from collections.abc import Callable

from ir.graph import Graph
from ir.verifier import verify

Pass = Callable[[Graph], Graph]

# Algebraic simplification, CSE and dead-code elimination (filled in by compiler/passes/).
OPTIMIZE: tuple[Pass, ...] = ()
# Fusion of elementwise work into loop kernels, then buffer planning.
FUSE: tuple[Pass, ...] = ()

# stage name -> the passes that lead from the previous stage to it.
STAGES: dict[str, tuple[Pass, ...]] = {
    "joint": (),
    "optimized": OPTIMIZE,
    "fused": FUSE,
}


def lower(graph: Graph, stage: str = "fused", check: bool = False) -> Graph:
    """Run every pass up to and including `stage` ("joint", "optimized" or "fused")."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    for name, passes in STAGES.items():
        for run_pass in passes:
            graph = run_pass(graph)
            if check:
                verify(graph)
        if name == stage:
            break
    return graph
