"""Rewrites that shape a graph for fusion: fewer, larger kernels from the same work.

`move_work_for_fusion` is one sweep; compiler/pipeline.py iterates it with constant folding
and DCE to a fixed point (`prepare_for_fusion`) in the FUSE stage, after the gemm pass and
before rematerialisation and `fuse_elementwise`. A fused kernel
iterates over one shape, so the rewrites move what splits kernels (reshapes that only add or
drop unit dims, small elementwise epilogues between a reduction and a broadcast, scalings of a
sum) out of the way:

    op(reshape(a), reshape(b))       -> reshape(op(a, b))         unit dims only: one shape
    broadcast_to(op(a, b), S)        -> op(broadcast_to(a, S), ..) cheap op read only there
    c * reduce_sum(x, A)             -> reduce_sum(c * x, A)      c a scalar constant; neg, div
    reduce_sum(reduce_sum(x, A), B)  -> reduce_sum(x, A + B)      (also reduce_max)
    m = f(x), sum(m) and g(m, ..)    -> each reader computes its own f(x)  f cheap, x one array

They change results at most by floating-point rounding (a sum of scaled terms). These
rewrites go against some of `simplify_algebra`'s (which pulls negations out of sums), which is
why they run once here and not in the OPTIMIZE rounds.
"""

from __future__ import annotations

from collections.abc import Callable

from ir.builder import GraphBuilder
from ir.graph import Graph, Node, Role, Var
from ir.ops import COMPARISON, ELEMENTWISE, Op

# Elementwise ops cheap enough to recompute per element of a broadcast (no libm call).
CHEAP_ELEMENTWISE = COMPARISON | frozenset(
    {Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.NEG, Op.MAX, Op.MIN, Op.WHERE, Op.CAST, Op.ABS,
     Op.SIGN}
)
# ops a fused loop body computes with (a broadcast read only by these is absorbed into them)
REDUCTIONS = frozenset({Op.REDUCE_SUM, Op.REDUCE_MAX})
LOOP_OPS = ELEMENTWISE | REDUCTIONS


def squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def is_unit_reshape(node: Node | None) -> bool:
    """A RESHAPE that only inserts or removes length-1 dims (a re-indexing, same order)."""
    return (
        node is not None
        and node.op == Op.RESHAPE
        and squeezed(node.inputs[0].shape) == squeezed(node.out.shape)
    )


class _Rewriter:
    """One sweep: `GraphBuilder` plus who reads each value of the graph being rewritten."""

    def __init__(self, graph: Graph):
        self.b = GraphBuilder(graph)
        self.readers = graph.consumers()
        self.outputs = set(graph.outputs)

    def emit(self, op: Op, *inputs: Var, like: Node, **params) -> Var:
        return self.b.emit(op, inputs, params, like)

    def reshaped(self, var: Var, shape: tuple[int, ...], like: Node) -> Var:
        return var if var.shape == shape else self.emit(Op.RESHAPE, var, like=like, shape=shape)

    def broadcast(self, var: Var, shape: tuple[int, ...], like: Node) -> Var:
        """`var` broadcast to `shape`; a broadcast is re-broadcast from its source."""
        node = self.b.producer(var)
        if node is not None and node.op == Op.BROADCAST_TO:
            var = node.inputs[0]
        return var if var.shape == shape else self.emit(
            Op.BROADCAST_TO, var, like=like, shape=shape)

    def read_once_by(self, var: Var, node: Node) -> bool:
        """Is `node` the only reader of `var` (and `var` not a graph output)?"""
        readers = self.readers.get(var, ())
        return self.b.uses[var] == 1 and len(readers) == 1 and readers[0].outputs == node.outputs

    # -- the rewrites ---------------------------------------------------------------------
    def elementwise_of_unit_reshapes(self, node: Node) -> Var | None:
        """op(reshape(a), reshape(b), broadcast(c)) -> reshape(op(a, b, broadcast(c)))."""
        if node.op not in ELEMENTWISE:
            return None
        source_shape = None
        for var in node.inputs:
            producer = self.b.producer(var)
            if is_unit_reshape(producer):
                shape = producer.inputs[0].shape
                if source_shape not in (None, shape):
                    return None
                source_shape = shape
            elif not self._is_scalar_broadcast(var):
                return None
        if source_shape is None or source_shape == node.out.shape:
            return None
        inputs = []
        for var in node.inputs:
            producer = self.b.producer(var)
            if is_unit_reshape(producer):
                inputs.append(producer.inputs[0])
            else:
                inputs.append(self.broadcast(var, source_shape, like=node))
        inner = self.b.emit(node.op, tuple(inputs), node.params, node)
        return self.emit(Op.RESHAPE, inner, like=node, shape=node.out.shape)

    def _is_scalar_broadcast(self, var: Var) -> bool:
        producer = self.b.producer(var)
        return producer is not None and (
            (producer.op == Op.BROADCAST_TO and producer.inputs[0].ndim == 0)
            or (producer.op == Op.CONSTANT and var.ndim == 0)
        )

    def broadcast_of_cheap_op(self, node: Node) -> Var | None:
        """broadcast_to(reshape?(op(a, b)), S) -> op(broadcast_to(reshape?(a), S), ..): when
        the op is cheap, read only through this broadcast, and the broadcast only by loops."""
        if node.op != Op.BROADCAST_TO or node.out.shape == node.inputs[0].shape:
            return None
        if not all(r.op in LOOP_OPS for r in self.readers.get(node.out, ())):
            return None
        (var,) = node.inputs
        reshape = None
        producer = self.b.producer(var)
        if is_unit_reshape(producer) and self.read_once_by(var, node):
            reshape, var = producer, producer.inputs[0]
            producer = self.b.producer(var)
        if producer is None or producer.op not in CHEAP_ELEMENTWISE:
            return None
        if not self.read_once_by(var, reshape or node):
            return None
        middle = node.inputs[0].shape
        inputs = []
        for x in producer.inputs:
            if reshape is not None and not self._is_scalar_broadcast(x):
                if self.b.producer_op(x) == Op.BROADCAST_TO:
                    return None  # reshape(broadcast) would be materialised
                x = self.reshaped(x, middle, like=node)
            inputs.append(self.broadcast(x, node.out.shape, like=node))
        inputs = tuple(inputs)
        return self.b.emit(producer.op, inputs, producer.params, producer)

    def scaled_sum(self, node: Node) -> Var | None:
        """neg(reduce_sum(x)), c * reduce_sum(x), reduce_sum(x) / c -> reduce_sum of the
        scaled x, so the scaling joins the loop that sums (c a scalar constant)."""
        if node.out.dtype.kind != "f":
            return None
        if node.op == Op.NEG:
            total, scale = node.inputs[0], None
        elif node.op == Op.MUL:
            x, y = node.inputs
            total, scale = (x, y) if self.b.scalar_value(y) is not None else (y, x)
        elif node.op == Op.DIV:
            total, scale = node.inputs
        else:
            return None
        summed = self.b.producer(total)
        if summed is None or summed.op != Op.REDUCE_SUM or not self.read_once_by(total, node):
            return None
        if scale is not None and self.b.scalar_value(scale) is None:
            return None
        (x,) = summed.inputs
        if scale is None:
            scaled = self.emit(Op.NEG, x, like=node)
        else:
            scale_first = node.op == Op.MUL and scale is node.inputs[0]
            value = self.b.constant(self.b.scalar_value(scale), scale.dtype, like=node)
            scale = self.broadcast(value, x.shape, like=node)
            operands = (scale, x) if scale_first else (x, scale)
            scaled = self.b.emit(node.op, operands, {}, node)
        return self.b.emit(Op.REDUCE_SUM, (scaled,), summed.params, summed)

    def nested_reduction(self, node: Node) -> Var | None:
        """reduce(reduce(x, A), B) -> reduce(x, A + B), same reduction, inner read once."""
        if node.op not in (Op.REDUCE_SUM, Op.REDUCE_MAX):
            return None
        inner = self.b.producer(node.inputs[0])
        if inner is None or inner.op != node.op or not self.read_once_by(inner.out, node):
            return None
        x = inner.inputs[0]
        first = {a % x.ndim for a in inner.params["axes"]}
        kept = [a for a in range(x.ndim) if a not in first]
        if not kept:
            return None
        second = {kept[a % len(kept)] for a in node.params["axes"]}
        axes = tuple(sorted(first | second))
        return self.b.emit(node.op, (x,), {"axes": axes}, node)

    def reduced_and_mapped(self, node: Node) -> Var | None:
        """A cheap value that is both reduced and read elementwise is recomputed by each of its
        loop readers (`node` gets its own copy) instead of being written out and read back:
        the elementwise reader usually needs the reduction's result (`mask * (g / sum(mask))`,
        the max rule's ties), so the two cannot share a loop. Only values computed from one
        array of their own shape (plus broadcasts and scalars) whose items are no wider than
        the value's qualify: a copy reads no more bytes than the saved value would have
        cost, and the write is saved."""
        if node.op not in LOOP_OPS:
            return None
        inputs, copied = [], False
        for var in node.inputs:
            if self._shared_by_a_reduction_and_a_map(var, node):
                var, copied = self._recompute(var, node, depth=4), True
            inputs.append(var)
        if not copied:
            return None
        return self.b.emit(node.op, tuple(inputs), node.params, node)

    def _cheap_of_one_array(self, var: Var) -> tuple[Node, Var] | None:
        """(producer, x) if `var` is a cheap elementwise op, not a graph output, of one array
        x of its own shape plus broadcasts and scalars; else None."""
        producer = self.b.producer(var)
        if producer is None or producer.op not in CHEAP_ELEMENTWISE or var in self.outputs:
            return None
        full = [x for x in producer.inputs if x.shape == var.shape
                and self.b.producer_op(x) != Op.BROADCAST_TO]
        return (producer, full[0]) if len(full) == 1 else None

    def _shared_by_a_reduction_and_a_map(self, var: Var, node: Node) -> bool:
        found = self._cheap_of_one_array(var)
        readers = self.readers.get(var, ())
        if found is None or len(readers) < 2 or not all(r.op in LOOP_OPS for r in readers):
            return False
        reduced = any(r.op in REDUCTIONS for r in readers)
        mapped = any(r.op not in REDUCTIONS for r in readers)
        same_side = all(_is_backward(r) == _is_backward(found[0]) for r in readers)
        narrow = self._array_read(var, depth=4).dtype.itemsize <= var.dtype.itemsize
        return reduced and mapped and same_side and narrow and node in readers

    def _array_read(self, var: Var, depth: int) -> Var:
        """The array a copy of `var` made by `_recompute` reads."""
        found = self._cheap_of_one_array(var) if depth else None
        return var if found is None else self._array_read(found[1], depth - 1)

    def _recompute(self, var: Var, like: Node, depth: int) -> Var:
        """A copy of `var`'s cheap producer (and of its cheap one-array producers, `depth`
        deep) for one reader."""
        found = self._cheap_of_one_array(var) if depth else None
        if found is None:
            return var
        producer, x = found
        inputs = tuple(self._recompute(v, like, depth - 1) if v is x else v
                       for v in producer.inputs)
        return self.b.emit(producer.op, inputs, producer.params, producer)


def _is_backward(node: Node) -> bool:
    """Did autodiff emit `node` (or is it a recomputation for the backward)?"""
    return node.role is not Role.FORWARD


REWRITES: tuple[Callable[[_Rewriter, Node], Var | None], ...] = (
    _Rewriter.elementwise_of_unit_reshapes,  # op(reshape(a), ..) -> reshape(op(a, ..))
    _Rewriter.broadcast_of_cheap_op,  # broadcast(op(a, ..)) -> op(broadcast(a), ..)
    _Rewriter.scaled_sum,  # c * sum(x) -> sum(c * x)
    _Rewriter.nested_reduction,  # sum(sum(x, A), B) -> sum(x, A + B)
    _Rewriter.reduced_and_mapped,  # m = f(x) reduced and mapped: each reader recomputes m
)


def _drop_trivial_reshapes(node: Node, b: GraphBuilder) -> Var | None:
    """reshape[shape(x)](x) -> x ; reshape(reshape(x)) -> reshape(x)."""
    (x,) = node.inputs
    if x.shape == node.out.shape:
        return x
    inner = b.producer(x)
    if inner is not None and inner.op == Op.RESHAPE:
        source = inner.inputs[0]
        if source.shape == node.out.shape:
            return source
        return b.emit(Op.RESHAPE, (source,), {"shape": node.out.shape}, node)
    return None


def move_work_for_fusion(graph: Graph) -> Graph:
    """One sweep of `REWRITES` (first match wins per node); returns `graph` itself when none
    applied.

    >>> import numpy as np
    >>> from compiler import compile
    >>> from compiler.passes.dce import eliminate_dead_code
    >>> from compiler.pipeline import prepare_for_fusion
    >>> f = compile(lambda x: -(np.sum(np.exp(x)) / 4.0))
    >>> g = move_work_for_fusion(f.trace(np.ones(4, np.float32)).graph)
    >>> [n.op.value for n in eliminate_dead_code(g).nodes][-3:]  # the division moved
    ['div', 'reduce_sum', 'neg']
    >>> [n.op.value for n in prepare_for_fusion(g).nodes][-3:]  # then the negation
    ['div', 'neg', 'reduce_sum']
    """
    rewriter = _Rewriter(graph)
    b = rewriter.b
    for node in graph.nodes:
        node = b.renamed(node)
        if len(node.outputs) != 1:  # a loop: its body is rewritten as a program of its own
            b.add(node)
            continue
        result = _drop_trivial_reshapes(node, b) if node.op == Op.RESHAPE else None
        for rewrite in REWRITES if len(node.outputs) == 1 else ():  # all_reduce has parts
            if result is not None:
                break
            result = rewrite(rewriter, node)
        if result is not None:
            b.replace(node.out, result)
        else:
            b.add(node)
    return b.finish()

