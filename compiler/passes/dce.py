"""Dead-code elimination: drop nodes none of whose outputs reach a graph output.

Runs at the end of every OPTIMIZE round (other rewrites leave the nodes they bypass behind)
and inside fusion. A multi-output node stays while any of its outputs is live.
"""

from __future__ import annotations

from ir.graph import Graph


def eliminate_dead_code(graph: Graph) -> Graph:
    """Remove dead nodes; returns `graph` itself when every node is live.

    >>> import numpy as np
    >>> from compiler import compile
    >>> def f(x):
    ...     unused = np.exp(x)
    ...     return x * 2.0
    >>> g = compile(f).trace(np.ones(2, np.float32)).graph
    >>> [n.op.value for n in eliminate_dead_code(g).nodes]
    ['constant', 'broadcast_to', 'mul']
    """
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if any(out in live for out in node.outputs):
            kept.append(node)
            live.update(node.inputs)
    if len(kept) == len(graph.nodes):
        return graph
    return Graph(list(graph.inputs), kept[::-1], list(graph.outputs))
