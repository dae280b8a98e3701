"""The pass pipeline, as literal tuples: read top to bottom, no hidden ordering.

A pass is a function `Graph -> Graph`. `lower(graph, stage)` runs the pipeline up to a named
stage; with `check=True` (as in tests) the verifier runs after every pass.
"""

from __future__ import annotations

from collections.abc import Callable

from compiler.passes.cse import eliminate_common_subexpressions
from compiler.passes.dce import eliminate_dead_code
from compiler.passes.fixed_point import iterate_to_fixed_point
from compiler.passes.fold_constants import fold_constants
from compiler.passes.fuse import fuse_elementwise
from compiler.passes.gemm_epilogue import fuse_gemm_epilogues
from compiler.passes.prefuse import prepare_for_fusion
from compiler.passes.remat import rematerialize_cheap_values
from compiler.passes.simplify import simplify_algebra
from ir.graph import Graph
from ir.verifier import verify

Pass = Callable[[Graph], Graph]

# Algebraic simplification, constant folding, CSE and dead-code elimination, in rounds until
# a round changes nothing (each enables the others).
OPTIMIZE: tuple[Pass, ...] = (
    iterate_to_fixed_point(
        simplify_algebra,
        fold_constants,
        eliminate_common_subexpressions,
        eliminate_dead_code,
        max_rounds=8,
    ),
)
# Matmuls whose product is only scaled and added to a value (an SGD update) as one
# accumulating BLAS call, matched first, while a learning rate is still one broadcast 0-d
# value (prepare_for_fusion pushes broadcasts below cheap scalar arithmetic); rewrites that
# let fusion form fewer, larger kernels; the choice of forward values the backward
# recomputes rather than holds; then fusion of elementwise work (and the reductions it feeds)
# into FUSED loop kernels. (plan_buffers then analyses the fused graph.)
FUSE: tuple[Pass, ...] = (
    fuse_gemm_epilogues,
    prepare_for_fusion,
    rematerialize_cheap_values,
    fuse_elementwise,
)

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
