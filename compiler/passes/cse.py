"""Common-subexpression elimination: two nodes with the same op, the same input values and
equal parameters compute the same thing, so later reads of the second read the first.

Runs in the OPTIMIZE stage. The key is (op, inputs, `ir.graph.param_key(params)`); operands
of commutative ops are sorted first so `x + y` and `y + x` meet. Every op is pure (random
numbers are a function of their key), so any two such nodes are interchangeable.
"""

from __future__ import annotations

from ir.builder import GraphBuilder
from ir.graph import Graph, Var, param_key
from ir.ops import Op

COMMUTATIVE = frozenset({Op.ADD, Op.MUL, Op.MAX, Op.MIN, Op.EQ, Op.NE})


def eliminate_common_subexpressions(graph: Graph) -> Graph:
    """Merge duplicate nodes; returns `graph` itself when there were none.

    >>> import numpy as np
    >>> from compiler import compile
    >>> g = compile(lambda x: np.exp(x) + np.exp(x)).trace(np.ones(2, np.float32)).graph
    >>> [n.op.value for n in eliminate_common_subexpressions(g).nodes]
    ['exp', 'add']
    """
    b = GraphBuilder(graph)
    seen: dict[tuple, tuple[Var, ...]] = {}
    for node in graph.nodes:
        node = b.renamed(node)
        inputs = node.inputs
        if node.op in COMMUTATIVE:
            inputs = tuple(sorted(inputs, key=lambda v: v.id))
        key = (node.op, inputs, param_key(node.params))
        earlier = seen.get(key)
        if earlier is None:
            seen[key] = node.outputs
            b.add(node)
            continue
        for out, same in zip(node.outputs, earlier):
            b.replace(out, same)
    return b.finish()
