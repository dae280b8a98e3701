"""Constant folding: a node whose inputs are all constants becomes a constant, computed by the
reference interpreter (so folding means exactly what running the graph would).

Runs in the OPTIMIZE stage. Only small results are folded (`MAX_FOLDED_ELEMENTS`) so a graph
never grows a large baked-in array, and BROADCAST_TO is never folded: a broadcast of a small
constant is cheaper as a broadcast (fusion absorbs it into a loop body and reads the small
array) than as a materialised array.
"""

from __future__ import annotations

import numpy as np

from compiler.passes.builder import GraphBuilder
from ir.graph import Graph
from ir.interpreter import eval_node
from ir.ops import Op

MAX_FOLDED_ELEMENTS = 1024
NEVER_FOLDED = frozenset({Op.CONSTANT, Op.BROADCAST_TO})


def fold_constants(graph: Graph) -> Graph:
    """Replace nodes whose inputs are all CONSTANTs by CONSTANTs; returns `graph` itself when
    nothing was folded.

    >>> import numpy as np
    >>> from compiler.frontend import exp, wrap
    >>> from compiler.tracing import Trace
    >>> trace = Trace()
    >>> one = exp(wrap(trace, trace.constant(np.float32(0))))
    >>> folded = fold_constants(trace.to_graph([one.ir_var]))
    >>> [(n.op.value, n.params["value"].item()) for n in folded.nodes]
    [('constant', 0.0), ('constant', 1.0)]
    """
    b = GraphBuilder(graph)
    for node in graph.nodes:
        node = b.renamed(node)
        foldable = (
            node.op not in NEVER_FOLDED
            and node.inputs
            and all(b.producer_op(v) == Op.CONSTANT for v in node.inputs)
            and all(v.type.size <= MAX_FOLDED_ELEMENTS for v in node.outputs)
        )
        if not foldable:
            b.add(node)
            continue
        values = eval_node(node, [b.producer(v).params["value"] for v in node.inputs])
        for out, value in zip(node.outputs, values):
            b.replace(out, b.constant(np.array(value, dtype=out.dtype), out.dtype, like=node))
    return b.finish()
