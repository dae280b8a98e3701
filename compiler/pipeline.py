"""The pass pipeline, as literal tuples: read top to bottom, no hidden ordering.

A pass is a function `Graph -> Graph`. `lower(graph, stage)` runs the pipeline up to a named
stage; with `check=True` (as in tests) the verifier runs after every pass.
"""

from __future__ import annotations

import dataclasses
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
from ir.ops import LOOPS
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


def on_loop_bodies(run_pass: Pass) -> Pass:
    """`run_pass` on the graph and on every loop body in it (nested ones too), each body as a
    program of its own: a loop's body runs once per step, so it gets the whole optimisation
    and fusion a program gets, its kernels formed once for every step. The outer graph sees
    a loop as one opaque node (nothing is moved across the loop boundary)."""

    def run(graph: Graph) -> Graph:
        nodes, changed = [], False
        for node in graph.nodes:
            if node.op in LOOPS:
                params = {key: run(value) if isinstance(value, Graph) else value
                          for key, value in node.params.items()}
                if any(params[k] is not node.params[k] for k in params):
                    node, changed = dataclasses.replace(node, params=params), True
            nodes.append(node)
        if changed:
            graph = Graph(list(graph.inputs), nodes, list(graph.outputs))
        return run_pass(graph)

    run.__name__ = getattr(run_pass, "__name__", "pass")
    return run


def lower(graph: Graph, stage: str = "fused", check: bool = False) -> Graph:
    """Run every pass up to and including `stage` ("joint", "optimized" or "fused")."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    for name, passes in STAGES.items():
        for run_pass in passes:
            graph = on_loop_bodies(run_pass)(graph)
            if check:
                verify(graph)
        if name == stage:
            break
    return graph
