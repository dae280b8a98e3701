"""GEMM epilogues: a matmul whose product is only scaled and added to another value becomes one
BLAS call that accumulates into that value.

BLAS's gemm computes C := alpha (A @ B) + beta C. A plain SGD update `W - lr * (Xᵀ G)` is
that call with alpha = -lr, beta = 1 and C = W: the product is never stored and the update is
not a second pass over the weights (compiler/codegen writes C straight into a donated W).
Momentum's `mu * v + Xᵀ G` is beta = mu. Runs first in the FUSE stage (compiler/pipeline.py's
`ORDER` checks it in code): before `prepare_for_fusion` pushes a broadcast learning rate below
its scalar arithmetic, before `rematerialize_cheap_values` weighs its choices by the planned
buffers (which a gemm kernel's unstored product changes), and before elementwise fusion takes
the scale and add into loop kernels. The result is a GEMM node (an op of its own, ir/ops.py):

    Node(Op.GEMM, (a, b, x[, t]), (out,), params={"alpha": float, "beta": float})

with out = alpha t (a @ b) + beta x. The fourth input t, when there is one, is a 0-d value
known only at run time (a learning-rate schedule's rate); codegen passes alpha t as the call's
coefficient. The interpreter's rule (ir/interpreter.py) computes (alpha t) p + beta x, which
is exactly the arithmetic of the nodes folded (alpha is ±c or ±1, beta ±c' or ±1).

What matches, for a 2-D float32/float64 MATMUL whose product p nothing else reads:
    x + s p,  s p + x,  x - s p,  s p - x   (s p: p, c * p, p * c, t * p or p * t)
with c a compile-time scalar (a broadcast 0-d constant) and t a broadcast 0-d value of the
product's dtype; x of the product's type may itself be c' * x' (then beta = ±c' and x' is
the input) when nothing else reads it. x must be a graph input and the sum a graph output:
the call pays when C is x's own memory, a donated input updated in place. Anywhere else C
starts as a copy of x, and that copy costs the pass over memory the call saves (a bias add
`h @ W + b` stays an epilogue loop). Not matched: a zero constant coefficient (0 * p is NaN
where p is, and BLAS would skip the product; for a traced t that is 0 at run time the kernels
of compiler/kernels/blas.py compute it anyway), a scale that is an array, a traced beta,
batched products, operands that are the same value. The group is convex: the product and
its scaled copy have one reader each, inside the group, so no path leaves it and comes back.
"""

from __future__ import annotations

import math

from compiler.passes.dce import eliminate_dead_code
from ir.builder import scalar_value
from ir.graph import Graph, Node, Var
from ir.ops import Op

FLOATS = ("float32", "float64")


class _Match:
    def __init__(self, graph: Graph):
        self.producer = graph.producers()
        self.readers = graph.consumers()
        self.returned = set(graph.outputs)
        self.inputs = set(graph.inputs)

    def only_reader(self, var: Var, node: Node) -> bool:
        return var not in self.returned and [id(n) for n in self.readers.get(var, [])] == [
            id(node)]

    def broadcast_0d(self, var: Var) -> Var | None:
        """The 0-d value `var` is a broadcast of (a body copies those in), else None."""
        node = self.producer.get(var)
        if node is None or node.op != Op.BROADCAST_TO or node.inputs[0].ndim != 0:
            return None
        return node.inputs[0]

    def scaled(self, var: Var, reader: Node, traced: bool = False
               ) -> tuple[Var, float, Var | None, list[Node]]:
        """`var` as (base, c, t, [the MUL]) when it is c * base or base * c with c a constant
        (t None), or with `traced`, t * base or base * t with t a 0-d value of var's dtype (c
        1); read only by `reader`. Else (var, 1, None, [])."""
        node = self.producer.get(var)
        if node is None or node.op != Op.MUL or not self.only_reader(var, reader):
            return var, 1.0, None, []
        for k in (0, 1):
            source = self.broadcast_0d(node.inputs[k])
            if source is None:
                continue
            c = scalar_value(self.producer, source)
            if c is not None:
                return node.inputs[1 - k], float(c), None, [node]
            if traced and source.dtype == var.dtype:
                return node.inputs[1 - k], 1.0, source, [node]
        return var, 1.0, None, []

    def product(self, var: Var, reader: Node) -> Node | None:
        node = self.producer.get(var)
        if node is None or node.op != Op.MATMUL or node.out.ndim != 2:
            return None
        if node.out.dtype.name not in FLOATS or not self.only_reader(var, reader):
            return None
        return node

    def at(self, node: Node) -> tuple[tuple[Var, ...], float, float] | None:
        """(the gemm node's inputs, alpha, beta) for an ADD/SUB `node`, or None."""
        if node.op not in (Op.ADD, Op.SUB) or node.out.ndim != 2:
            return None
        for k in (0, 1):
            base, alpha, t, scale = self.scaled(node.inputs[k], node, traced=True)
            matmul = self.product(base, scale[0] if scale else node)
            if matmul is None:
                continue
            x, beta, _, _ = self.scaled(node.inputs[1 - k], node)
            if node.op == Op.SUB:
                alpha, beta = (-alpha, beta) if k == 1 else (alpha, -beta)
            a, b = matmul.inputs
            if x.type != matmul.out.type or len({a, b, x}) < 3:
                continue
            if x not in self.inputs or node.out not in self.returned:
                continue
            if not all(c != 0 and math.isfinite(c) for c in (alpha, beta)):
                continue
            inputs = (a, b, x) if t is None else (a, b, x, t)
            return inputs, alpha, beta
        return None


def fuse_gemm_epilogues(graph: Graph) -> Graph:
    """Fold `x ± c (a @ b)` (and c' x ± ...) into GEMM nodes (see the module docstring).

    >>> import numpy as np
    >>> from compiler import compile
    >>> f = compile(lambda x, g, w: w - 0.5 * (x.T @ g))
    >>> ones = np.ones((3, 2), np.float32)
    >>> node = fuse_gemm_epilogues(f.trace(ones, ones, np.ones((2, 2), np.float32)).graph).nodes[-1]
    >>> node.op, node.params
    (Op.GEMM, {'alpha': -0.5, 'beta': 1.0})
    """
    match = _Match(graph)
    nodes, changed = [], False
    for node in graph.nodes:
        found = match.at(node)
        if found is not None:
            # the sum's value now comes from the gemm node; the product and the scaling it
            # folded in have no other reader (`_Match`), so dead-code elimination drops them
            inputs, alpha, beta = found
            node, changed = Node(Op.GEMM, inputs, node.outputs, {"alpha": alpha, "beta": beta},
                                 node.source, node.note, node.role), True
        nodes.append(node)
    if not changed:
        return graph
    return eliminate_dead_code(Graph(list(graph.inputs), nodes, list(graph.outputs)))
