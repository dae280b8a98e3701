"""Constant folding: a node whose inputs are all constants becomes a constant, computed by the
reference interpreter (so folding means exactly what running the graph would).

Runs in the OPTIMIZE stage (and again before fusion). Only small results are folded
(`MAX_FOLDED_ELEMENTS`) so a graph never grows a large baked-in array, and BROADCAST_TO is never
folded: a broadcast of a small constant is cheaper as a broadcast (fusion absorbs it into a loop
body and reads the small array) than as a materialised array. For the same reason an
elementwise op over broadcasts of constants is folded on the small arrays and broadcast after:
`neg(broadcast_to(c, S)) -> broadcast_to(-c, S)`, so no kernel is left computing a constant.
"""

from __future__ import annotations

import numpy as np

from ir.builder import GraphBuilder
from ir.graph import Graph, Node
from ir.interpreter import eval_node
from ir.ops import ELEMENTWISE, Op

MAX_FOLDED_ELEMENTS = 1024
# loops: run them; all_reduce: at run time
NEVER_FOLDED = frozenset({Op.CONSTANT, Op.BROADCAST_TO, Op.SCAN, Op.WHILE, Op.ALL_REDUCE})


def _constant_source(b: GraphBuilder, var) -> np.ndarray | None:
    """The small constant array `var` is (or is a broadcast of); else None."""
    node = b.producer(var)
    if node is not None and node.op == Op.BROADCAST_TO:
        node = b.producer(node.inputs[0])
    if node is None or node.op != Op.CONSTANT:
        return None
    return node.params["value"]


def _fold_over_broadcasts(node: Node, b: GraphBuilder) -> bool:
    """op(broadcast_to(c1, S), ..) -> broadcast_to(op(c1', ..), S), the c' broadcast to the
    smallest shape they share; True when it folded."""
    if node.op not in ELEMENTWISE or not node.inputs:
        return False
    sources = [_constant_source(b, v) for v in node.inputs]
    if any(s is None for s in sources):
        return False
    shape = node.out.shape
    ndim = len(shape)
    # align every source to the output's rank, then take the shape they broadcast to
    aligned = [s.reshape((1,) * (ndim - s.ndim) + s.shape) for s in sources]
    small = np.broadcast_shapes(*(a.shape for a in aligned))
    if int(np.prod(small, dtype=np.int64)) > MAX_FOLDED_ELEMENTS:
        return False
    values = [np.broadcast_to(a, small) for a in aligned]
    (value,) = eval_node(node, values)
    while small and small[0] == 1:  # leading unit dims come back with the broadcast
        small = small[1:]
    value = np.reshape(value, small)
    folded = b.constant(np.array(value, dtype=node.out.dtype), node.out.dtype, like=node)
    if small != shape:
        folded = b.emit(Op.BROADCAST_TO, (folded,), {"shape": shape}, like=node)
    b.replace(node.out, folded)
    return True


def fold_constants(graph: Graph) -> Graph:
    """Replace nodes whose inputs are all CONSTANTs by CONSTANTs (and elementwise ops over
    broadcast constants by broadcast constants); returns `graph` itself when nothing was folded.

    >>> import numpy as np
    >>> from compiler.primitives import exp, wrap
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
            if not _fold_over_broadcasts(node, b):
                b.add(node)
            continue
        values = eval_node(node, [b.producer(v).params["value"] for v in node.inputs])
        for out, value in zip(node.outputs, values):
            b.replace(out, b.constant(np.array(value, dtype=out.dtype), out.dtype, like=node))
    return b.finish()
