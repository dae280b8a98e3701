"""Iterating a group of passes until none of them changes the graph.

Rewrites enable each other (folding a constant exposes `x * 1`, simplifying exposes a common
subexpression), so the OPTIMIZE stage runs its passes in rounds. A pass signals "no change" by
returning the very graph it was given; the round limit bounds the work on any graph.
"""

from __future__ import annotations

from collections.abc import Callable

from ir.graph import Graph

Pass = Callable[[Graph], Graph]


def iterate_to_fixed_point(*passes: Pass, max_rounds: int = 8) -> Pass:
    """One pass that runs `passes` in order, round after round, until a round changes nothing
    (or `max_rounds` rounds ran).

    >>> from compiler.passes.dce import eliminate_dead_code
    >>> iterate_to_fixed_point(eliminate_dead_code).__name__
    'iterate_to_fixed_point(eliminate_dead_code)'
    """

    def run(graph: Graph) -> Graph:
        for _ in range(max_rounds):
            before = graph
            for run_pass in passes:
                graph = run_pass(graph)
            if graph is before:
                break
        return graph

    run.__name__ = f"iterate_to_fixed_point({', '.join(p.__name__ for p in passes)})"
    run.passes = passes
    return run
