"""Algebraic simplification: a table of local rewrites, applied in one forward sweep.

Runs in the OPTIMIZE stage on the joint (forward + backward) graph, iterated with constant
folding, CSE and DCE to a fixed point. Each rewrite looks at one node and the producers of its
inputs and returns the value that replaces the node's output (an existing value or one built
from new nodes), or None. Rewrites only ever replace a value by one of the same type, and never
change results beyond floating-point rounding (no `x*0 -> 0`: x may be inf or nan).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ir.builder import GraphBuilder
from ir.graph import Graph, Node, Var
from ir.ops import Op

Rewrite = Callable[[Node, GraphBuilder], "Var | None"]


def _is(b: GraphBuilder, var: Var, value) -> bool:
    found = b.scalar_value(var)
    return found is not None and found == value


def _negated(b: GraphBuilder, var: Var, single_use: bool = False) -> Var | None:
    """x when `var` is neg(x) (and, if asked, read only once, so dropping it saves work)."""
    node = b.producer(var)
    if node is None or node.op != Op.NEG or (single_use and b.uses[var] > 1):
        return None
    return node.inputs[0]


def _emit(b: GraphBuilder, op: Op, *inputs: Var, like: Node, **params) -> Var:
    return b.emit(op, inputs, params, like)


# -- arithmetic identities ------------------------------------------------------------------


def _identity_element(value, side: str) -> Rewrite:
    """op(x, e) -> x (side "right") or op(e, x) -> x (side "left") for the identity e."""
    at = 1 if side == "right" else 0

    def rewrite(node, b):
        return node.inputs[1 - at] if _is(b, node.inputs[at], value) else None

    rewrite.__name__ = f"{side}_identity_{value}"
    return rewrite


def _same_operands(node, b):
    x, y = node.inputs[-2:]
    return x if x is y else None


def _add_negated(node, b):
    x, y = node.inputs
    if (ny := _negated(b, y)) is not None:
        return _emit(b, Op.SUB, x, ny, like=node)
    if (nx := _negated(b, x)) is not None:
        return _emit(b, Op.SUB, y, nx, like=node)
    return None


def _sub_negated(node, b):
    x, y = node.inputs
    if (ny := _negated(b, y)) is not None:
        return _emit(b, Op.ADD, x, ny, like=node)
    return None


def _sub_from_zero(node, b):
    x, y = node.inputs
    return _emit(b, Op.NEG, y, like=node) if _is(b, x, 0) else None


def _times_minus_one(node, b):
    x, y = node.inputs
    if _is(b, y, -1):
        return _emit(b, Op.NEG, x, like=node)
    if _is(b, x, -1):
        return _emit(b, Op.NEG, y, like=node)
    return None


def _both_negated(node, b):
    x, y = node.inputs
    nx, ny = _negated(b, x), _negated(b, y)
    if nx is None or ny is None:
        return None
    return _emit(b, node.op, nx, ny, like=node)


def _one_negated(node, b):
    x, y = node.inputs
    if (ny := _negated(b, y, single_use=True)) is not None:
        return _emit(b, Op.NEG, _emit(b, node.op, x, ny, like=node), like=node)
    if (nx := _negated(b, x, single_use=True)) is not None:
        return _emit(b, Op.NEG, _emit(b, node.op, nx, y, like=node), like=node)
    return None


def _double_negation(node, b):
    return _negated(b, node.inputs[0])


def _negated_difference(node, b):
    inner = b.producer(node.inputs[0])
    if inner is None or inner.op != Op.SUB or b.uses[node.inputs[0]] > 1:
        return None
    x, y = inner.inputs
    return _emit(b, Op.SUB, y, x, like=node)


def _identity(node, b):
    return node.inputs[0]


def _cast_to_same_dtype(node, b):
    (x,) = node.inputs
    return x if x.dtype == node.out.dtype else None


# -- movement -------------------------------------------------------------------------------


def _same_shape(node, b):
    (x,) = node.inputs
    return x if x.shape == node.out.shape else None


def _identity_permutation(node, b):
    perm = node.params["perm"]
    return node.inputs[0] if tuple(perm) == tuple(range(len(perm))) else None


def _transpose_of_transpose(node, b):
    inner = b.producer(node.inputs[0])
    if inner is None or inner.op != Op.TRANSPOSE:
        return None
    first, second = inner.params["perm"], node.params["perm"]
    perm = tuple(first[axis] for axis in second)  # out[i] = in[first[second[i]]]
    if perm == tuple(range(len(perm))):
        return inner.inputs[0]
    return _emit(b, Op.TRANSPOSE, inner.inputs[0], like=node, perm=perm)


def _reshape_of_reshape(node, b):
    inner = b.producer(node.inputs[0])
    if inner is None or inner.op != Op.RESHAPE:
        return None
    if inner.inputs[0].shape == node.out.shape:
        return inner.inputs[0]
    return _emit(b, Op.RESHAPE, inner.inputs[0], like=node, shape=node.out.shape)


def _swaps_last_two(perm, ndim: int) -> bool:
    return tuple(perm) == (*range(ndim - 2), ndim - 1, ndim - 2)


def _transpose_of_matmul(node, b):
    """transpose(a @ b) over the last two axes -> transpose(b) @ transpose(a), when one of a,
    b is itself such a transpose (so one pair cancels: fewer transposes, and the product
    comes out contiguous, where a reshape of the transposed one was a copy) and the
    product is read only here."""
    ndim = node.out.ndim
    inner = b.producer(node.inputs[0])
    if inner is None or inner.op != Op.MATMUL or not _swaps_last_two(node.params["perm"], ndim):
        return None
    if b.uses[node.inputs[0]] > 1:
        return None
    transposed = [p is not None and p.op == Op.TRANSPOSE and _swaps_last_two(p.params["perm"], ndim)
                  for p in map(b.producer, inner.inputs)]
    if not any(transposed):
        return None
    perm = node.params["perm"]
    x, y = (_emit(b, Op.TRANSPOSE, v, like=node, perm=perm) for v in reversed(inner.inputs))
    return _emit(b, Op.MATMUL, x, y, like=inner)


def _rebroadcast(node, b):
    """A broadcast's source broadcast straight to this node's shape: always right for a
    broadcast of a broadcast; for a transpose or reshape only when the source is 0-d."""
    inner = b.producer(node.inputs[0])
    if inner is None or inner.op != Op.BROADCAST_TO:
        return None
    if node.op != Op.BROADCAST_TO and inner.inputs[0].ndim != 0:
        return None
    return _emit(b, Op.BROADCAST_TO, inner.inputs[0], like=node, shape=node.out.shape)


def _padded_axis(node: Node) -> int | None:
    """The one axis a PAD without interior padding pads, else None."""
    p = node.params
    if any(p["interiors"]):
        return None
    axes = [k for k, (lo, hi) in enumerate(zip(p["lows"], p["highs"])) if lo or hi]
    return axes[0] if len(axes) == 1 else None


def _sum_of_pads(node, b):
    """pad(x) + pad(y) padding one axis, x's part just before y's -> pad(concatenate(x, y)):
    a slice's gradient is a pad, so the gradient of a value sliced into parts (the gates of
    a GRU or an LSTM step) was a sum of pads, each a kernel writing the whole array."""
    px, py = (b.producer(v) for v in node.inputs)
    if px is None or py is None or px.op != Op.PAD or py.op != Op.PAD:
        return None
    axis = _padded_axis(px)
    if axis is None or axis != _padded_axis(py):
        return None
    (x,), (y,) = px.inputs, py.inputs
    if px.params["lows"][axis] + x.shape[axis] != py.params["lows"][axis]:
        if py.params["lows"][axis] + y.shape[axis] != px.params["lows"][axis]:
            return None
        px, py, x, y = py, px, y, x
    joined = _emit(b, Op.CONCATENATE, x, y, like=node, axis=axis)
    lows, highs = list(px.params["lows"]), list(py.params["highs"])
    if not any(lows) and not any(highs):
        return joined
    return _emit(b, Op.PAD, joined, like=node, lows=tuple(lows), highs=tuple(highs),
                 interiors=px.params["interiors"])


def _concatenate_of_concatenate(node, b):
    """concatenate[k](.., concatenate[k](a, b), ..) -> concatenate[k](.., a, b, ..)"""
    axis = node.params["axis"] % node.out.ndim
    parts, merged = [], False
    for v in node.inputs:
        inner = b.producer(v)
        if inner is not None and inner.op == Op.CONCATENATE \
                and inner.params["axis"] % v.ndim == axis:
            parts.extend(inner.inputs)
            merged = True
        else:
            parts.append(v)
    return _emit(b, Op.CONCATENATE, *parts, like=node, axis=axis) if merged else None


# -- reductions -----------------------------------------------------------------------------


def _no_axes(node, b):
    return node.inputs[0] if not node.params["axes"] else None


def _reduced_broadcast(node: Node, b: GraphBuilder) -> tuple[Var, int] | None:
    """For reduce(broadcast_to(x, S), axes) where `axes` are exactly the axes the broadcast
    added (plus any of length 1): x reshaped to the result shape, and the broadcast factor."""
    inner = b.producer(node.inputs[0])
    if inner is None or inner.op != Op.BROADCAST_TO:
        return None
    x, shape = inner.inputs[0], inner.out.shape
    lead = len(shape) - x.ndim
    axes = {a % len(shape) for a in node.params["axes"]}
    factor = 1
    for axis, dim in enumerate(shape):
        copied = axis < lead or x.shape[axis - lead] != dim
        if copied and axis not in axes:
            return None  # a kept axis is a broadcast one: the result is not x's shape
        if axis in axes:
            if not (axis < lead or x.shape[axis - lead] == 1):
                return None  # a reduced axis holds distinct values
            factor *= dim
    if x.shape != node.out.shape:
        x = _emit(b, Op.RESHAPE, x, like=node, shape=node.out.shape)
    return x, factor


def _sum_of_broadcast(node, b):
    if node.out.dtype == np.bool_:
        return None
    found = _reduced_broadcast(node, b)
    if found is None:
        return None
    x, factor = found
    if factor == 1:
        return x
    scale = b.constant(factor, x.dtype, like=node)
    if x.ndim:
        scale = _emit(b, Op.BROADCAST_TO, scale, like=node, shape=x.shape)
    return _emit(b, Op.MUL, x, scale, like=node)


def _negation_outside(node, b):
    """op(neg(x)) -> neg(op(x)) for a linear one-operand op, the neg read once."""
    x = _negated(b, node.inputs[0], single_use=True)
    if x is None:
        return None
    return _emit(b, Op.NEG, _emit(b, node.op, x, like=node, **node.params), like=node)


def _broadcast_of_one_element(node, b):
    (x,) = node.inputs
    value = b.scalar_value(x)
    if x.ndim == 0 or x.type.size != 1 or value is None:
        return None
    scalar = b.constant(value, x.dtype, like=b.producer(x))
    return _emit(b, Op.BROADCAST_TO, scalar, like=node, shape=node.out.shape)


def _max_of_broadcast(node, b):
    found = _reduced_broadcast(node, b)
    return None if found is None else found[0]


# op -> the rewrites tried on it, in order; the first that applies wins.
SIMPLIFY_RULES: dict[Op, tuple[Rewrite, ...]] = {
    Op.ADD: (
        _identity_element(0, "right"),  # x + 0 -> x
        _identity_element(0, "left"),  # 0 + x -> x
        _add_negated,  # x + neg(y) -> x - y ; neg(x) + y -> y - x
        _sum_of_pads,  # pad(x) + pad(y), y's part right after x's -> pad(concatenate(x, y))
    ),
    Op.CONCATENATE: (
        _concatenate_of_concatenate,  # concatenate(a, concatenate(b, c)) -> concatenate(a, b, c)
    ),
    Op.SUB: (
        _identity_element(0, "right"),  # x - 0 -> x
        _sub_negated,  # x - neg(y) -> x + y
        _sub_from_zero,  # 0 - x -> neg(x)
    ),
    Op.MUL: (
        _identity_element(1, "right"),  # x * 1 -> x
        _identity_element(1, "left"),  # 1 * x -> x
        _times_minus_one,  # x * -1 -> neg(x) ; -1 * x -> neg(x)
        _both_negated,  # neg(x) * neg(y) -> x * y
        _one_negated,  # x * neg(y) -> neg(x * y) ; neg(x) * y -> neg(x * y)  (neg read once)
    ),
    Op.DIV: (
        _identity_element(1, "right"),  # x / 1 -> x
        _both_negated,  # neg(x) / neg(y) -> x / y
        _one_negated,  # x / neg(y) -> neg(x / y) ; neg(x) / y -> neg(x / y)  (neg read once)
    ),
    Op.POW: (_identity_element(1, "right"),),  # x ** 1 -> x
    Op.MAX: (_same_operands,),  # max(x, x) -> x
    Op.MIN: (_same_operands,),  # min(x, x) -> x
    Op.WHERE: (_same_operands,),  # where(c, x, x) -> x
    Op.NEG: (
        _double_negation,  # neg(neg(x)) -> x
        _negated_difference,  # neg(x - y) -> y - x  (difference read once)
    ),
    Op.STOP_GRADIENT: (_identity,),  # stop_gradient(x) -> x  (autodiff has already run)
    Op.CAST: (_cast_to_same_dtype,),  # cast[dtype(x)](x) -> x
    Op.TRANSPOSE: (
        _identity_permutation,  # transpose[0,1,..](x) -> x
        _transpose_of_transpose,  # transpose[q](transpose[p](x)) -> transpose[p∘q](x)
        _transpose_of_matmul,  # T(a @ T(c)) -> c @ T(a), T(T(c) @ b) -> T(b) @ c; T: last two
        _rebroadcast,  # transpose(broadcast_to(s)) -> broadcast_to(s), s 0-d
    ),
    Op.RESHAPE: (
        _same_shape,  # reshape[shape(x)](x) -> x
        _reshape_of_reshape,  # reshape[t](reshape[s](x)) -> reshape[t](x)
        _rebroadcast,  # reshape(broadcast_to(s)) -> broadcast_to(s), s 0-d
        _negation_outside,  # reshape(neg(x)) -> neg(reshape(x))  (neg read once)
    ),
    Op.BROADCAST_TO: (
        _same_shape,  # broadcast_to[shape(x)](x) -> x
        _rebroadcast,  # broadcast_to[t](broadcast_to[s](x)) -> broadcast_to[t](x)
        _broadcast_of_one_element,  # broadcast_to(constant [c]) -> broadcast_to(constant c), 0-d
    ),
    Op.REDUCE_SUM: (
        _no_axes,  # reduce_sum[]( x) -> x
        _sum_of_broadcast,  # reduce_sum[A](broadcast_to(x)) -> reshape(x) * |A|, A = copied axes
        _negation_outside,  # reduce_sum(neg(x)) -> neg(reduce_sum(x))  (neg read once)
    ),
    Op.REDUCE_MAX: (
        _no_axes,  # reduce_max[](x) -> x
        _max_of_broadcast,  # reduce_max[A](broadcast_to(x)) -> reshape(x), A = copied axes
    ),
    Op.REDUCE_PROD: (_no_axes,),  # reduce_prod[](x) -> x
}


def simplify_algebra(graph: Graph) -> Graph:
    """Apply `SIMPLIFY_RULES` in one sweep; returns `graph` itself when nothing applied.

    >>> import numpy as np
    >>> from compiler import compile
    >>> f = compile(lambda x: -(-x) * 1.0)
    >>> print(simplify_algebra(f.trace(np.ones(3, np.float32)).graph).outputs[0].type)
    f32[3]
    """
    b = GraphBuilder(graph)
    for node in graph.nodes:
        node = b.renamed(node)
        for rewrite in SIMPLIFY_RULES.get(node.op, ()):
            result = rewrite(node, b)
            if result is not None:
                b.replace(node.out, result)
                break
        else:
            b.add(node)
    return b.finish()
