"""The pass pipeline, as literal tuples: read top to bottom, no hidden ordering.

A pass is a function `Graph -> Graph` that returns the very graph it was given when it changes
nothing. Everything that is not a pass is spelled out here: the sub-pipelines iterated to a
fixed point, the cost models handed to the passes that weigh choices by later stages
(compiler/cost_model.py), and the order constraints between passes, checked in code when this
module loads (`check_order`). `lower(graph, stage)` runs the pipeline up to a named stage;
with `check=True` (as in tests) the verifier runs after every pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from compiler.cost_model import planned_arena_bytes
from compiler.passes.cse import eliminate_common_subexpressions
from compiler.passes.dce import eliminate_dead_code
from compiler.passes.fold_constants import fold_constants
from compiler.passes.fuse import fuse_elementwise
from compiler.passes.gemm_epilogue import fuse_gemm_epilogues
from compiler.passes.move_work import move_work_for_fusion
from compiler.passes.remat import rematerialize_cheap_values
from compiler.passes.simplify import simplify_algebra
from ir.graph import Graph
from ir.ops import LOOPS
from ir.verifier import verify

Pass = Callable[[Graph], Graph]


def iterate_to_fixed_point(*passes: Pass, name: str, max_rounds: int = 8) -> Pass:
    """A sub-pipeline: one pass, called `name`, that runs `passes` in order, round after round,
    until a round changes nothing (every pass returned the graph it was given) or `max_rounds`
    rounds ran. Rewrites enable each other (folding a constant exposes `x * 1`, simplifying
    exposes a common subexpression), so a group of them runs in rounds.

    >>> rounds = iterate_to_fixed_point(eliminate_dead_code, name="dce_rounds")
    >>> rounds.__name__, [p.__name__ for p in rounds.passes]
    ('dce_rounds', ['eliminate_dead_code'])
    """

    def run(graph: Graph) -> Graph:
        for _ in range(max_rounds):
            before = graph
            for run_pass in passes:
                graph = run_pass(graph)
            if graph is before:
                break
        return graph

    run.__name__ = run.__qualname__ = name
    run.passes = passes
    return run


def priced_by(pass_with_cost: Callable[[Graph, Callable[[Graph], int]], Graph],
              cost: Callable[[Graph], int]) -> Pass:
    """`pass_with_cost` with its cost model bound: a `Graph -> Graph` pass of the same name."""

    def run(graph: Graph) -> Graph:
        return pass_with_cost(graph, cost)

    run.__name__ = run.__qualname__ = pass_with_cost.__name__
    run.passes = (pass_with_cost,)
    run.cost = cost
    return run


# Algebraic simplification, constant folding, CSE and dead-code elimination, in rounds until
# a round changes nothing (each enables the others).
optimize = iterate_to_fixed_point(
    simplify_algebra,
    fold_constants,
    eliminate_common_subexpressions,
    eliminate_dead_code,
    name="optimize",
    max_rounds=8,
)
# Rewrites that let fusion form fewer, larger kernels, with the folding and dead-code
# elimination they expose (compiler/passes/move_work.py), in rounds.
prepare_for_fusion = iterate_to_fixed_point(
    move_work_for_fusion,
    fold_constants,
    eliminate_dead_code,
    name="prepare_for_fusion",
    max_rounds=8,
)
# The choice of forward values the backward recomputes rather than holds, priced by the
# arena bytes the fused graph's buffer plan takes.
rematerialize = priced_by(rematerialize_cheap_values, planned_arena_bytes)

OPTIMIZE: tuple[Pass, ...] = (optimize,)
# Matmuls whose product is only scaled and added to a value (an SGD update) as one
# accumulating BLAS call; rewrites that let fusion form fewer, larger kernels;
# rematerialisation; then fusion of elementwise work (and the reductions it feeds) into FUSED
# loop kernels. (plan_buffers then analyses the fused graph.)
FUSE: tuple[Pass, ...] = (
    fuse_gemm_epilogues,
    prepare_for_fusion,
    rematerialize,
    fuse_elementwise,
)

# stage name -> the passes that lead from the previous stage to it.
STAGES: dict[str, tuple[Pass, ...]] = {
    "joint": (),
    "optimized": OPTIMIZE,
    "fused": FUSE,
}

# (earlier, later, why): wherever both run, `earlier` must run first. Passes inside
# sub-pipelines count, at their sub-pipeline's place.
ORDER: tuple[tuple[Pass, Pass, str], ...] = (
    (fuse_gemm_epilogues, move_work_for_fusion,
     "the gemm pass matches a learning rate while it is still one broadcast 0-d value; "
     "move_work_for_fusion pushes broadcasts below cheap scalar arithmetic"),
    (fuse_gemm_epilogues, rematerialize_cheap_values,
     "rematerialisation prices its plans by the buffers, which a gemm kernel's unstored "
     "product changes"),
    (fuse_gemm_epilogues, fuse_elementwise,
     "elementwise fusion would take the scale and the add into loop kernels"),
    (rematerialize_cheap_values, fuse_elementwise,
     "rematerialisation rewrites the backward's reads of unfused values; fusion then pulls "
     "the recomputed copies into the kernels that read them"),
    (simplify_algebra, move_work_for_fusion,
     "move_work_for_fusion undoes some of simplify_algebra's rewrites (negations out of sums), "
     "so it runs after the OPTIMIZE rounds, not among them"),
)


class PipelineOrderError(AssertionError):
    """The pipeline breaks one of `ORDER`'s constraints."""


def flat_passes(passes: tuple[Pass, ...]) -> Iterator[tuple[int, Pass]]:
    """(position of the top-level pass, pass) for every pass, sub-pipelines opened."""
    for position, run_pass in enumerate(passes):
        yield position, run_pass
        for inner in getattr(run_pass, "passes", ()):
            for _, nested in flat_passes((inner,)):
                yield position, nested


def check_order(stages: dict[str, tuple[Pass, ...]] = STAGES,
                order: tuple[tuple[Pass, Pass, str], ...] = ORDER) -> None:
    """Raise PipelineOrderError when a pass runs before one `order` says must precede it."""
    whole = tuple(p for passes in stages.values() for p in passes)
    first: dict[Pass, int] = {}
    last: dict[Pass, int] = {}
    for position, run_pass in flat_passes(whole):
        first.setdefault(run_pass, position)
        last[run_pass] = position
    for earlier, later, why in order:
        if earlier in first and later in first and last[earlier] >= first[later]:
            raise PipelineOrderError(f"{earlier.__name__} must run before {later.__name__}: "
                                     f"{why}")


check_order()


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
