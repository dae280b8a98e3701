"""Shape and dtype rules: one function per op, from input types and params to output types.

The tracer runs these to type each new node and the verifier re-runs them over a whole graph.
A rule raises `ShapeError` with a sentence the user can act on; the tracer adds the source line.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ir import ops
from ir.ops import Op
from ir.types import TensorType, is_float


class ShapeError(ValueError):
    """Operands whose shapes or dtypes an op cannot accept."""


ShapeRule = Callable[..., tuple[TensorType, ...]]
SHAPE_RULES: dict[Op, ShapeRule] = {}


def shape_rule(*op_list: Op):
    def register(fn: ShapeRule) -> ShapeRule:
        for op in op_list:
            SHAPE_RULES[op] = fn
        return fn

    return register


def infer(op: Op, in_types: list[TensorType], params: dict) -> tuple[TensorType, ...]:
    return SHAPE_RULES[op](*in_types, **params)


def _same_shapes(types: tuple[TensorType, ...], what: str) -> tuple[int, ...]:
    shapes = {t.shape for t in types}
    if len(shapes) != 1:
        listed = ", ".join(str(t) for t in types)
        raise ShapeError(f"{what} needs operands of one shape (broadcast first), got {listed}")
    return types[0].shape


def _normalize_axes(axes: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    for a in axes:
        if not -ndim <= a < ndim:
            raise ShapeError(f"axis {a} is out of range for an array of rank {ndim}")
    return tuple(sorted(a % ndim for a in axes))


@shape_rule(Op.CONSTANT)
def _constant_shape(*, value):
    return (TensorType(value.shape, value.dtype),)


@shape_rule(*(ops.UNARY - {Op.CAST, Op.SIGN, Op.ABS, Op.NEG, Op.STOP_GRADIENT}))
def _float_unary_shape(x, **_):
    if not is_float(x.dtype):
        raise ShapeError(f"this op needs a floating-point operand, got {x}; cast it with astype")
    return (x,)


@shape_rule(Op.NEG, Op.ABS, Op.SIGN, Op.STOP_GRADIENT)
def _unary_shape(x):
    if x.dtype == np.bool_:
        raise ShapeError(f"this op is not defined for bool operands ({x})")
    return (x,)


@shape_rule(Op.CAST)
def _cast_shape(x, *, dtype):
    return (TensorType(x.shape, dtype),)


@shape_rule(*ops.BINARY)
def _binary_shape(x, y):
    shape = _same_shapes((x, y), "an elementwise op")
    if x.dtype != y.dtype:
        raise ShapeError(f"elementwise operands must share a dtype, got {x} and {y}")
    return (TensorType(shape, x.dtype),)


@shape_rule(*ops.COMPARISON)
def _compare_shape(x, y):
    shape = _same_shapes((x, y), "a comparison")
    if x.dtype != y.dtype:
        raise ShapeError(f"compared operands must share a dtype, got {x} and {y}")
    return (TensorType(shape, np.bool_),)


@shape_rule(Op.WHERE)
def _where_shape(cond, x, y):
    shape = _same_shapes((cond, x, y), "where")
    if cond.dtype != np.bool_:
        raise ShapeError(f"where's condition must be bool, got {cond}")
    if x.dtype != y.dtype:
        raise ShapeError(f"where's branches must share a dtype, got {x} and {y}")
    return (TensorType(shape, x.dtype),)


@shape_rule(Op.BROADCAST_TO)
def _broadcast_shape(x, *, shape):
    try:
        result = np.broadcast_shapes(x.shape, shape)
    except ValueError:
        result = None
    if result != tuple(shape):
        raise ShapeError(f"cannot broadcast {x} to shape {tuple(shape)}")
    return (TensorType(shape, x.dtype),)


@shape_rule(Op.RESHAPE)
def _reshape_shape(x, *, shape):
    if int(np.prod(shape, dtype=np.int64)) != x.size:
        raise ShapeError(f"cannot reshape {x} ({x.size} elements) to {tuple(shape)}")
    return (TensorType(shape, x.dtype),)


@shape_rule(Op.TRANSPOSE)
def _transpose_shape(x, *, perm):
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"transpose axes {perm} are not a permutation of {x}'s {x.ndim} axes")
    return (TensorType(tuple(x.shape[p] for p in perm), x.dtype),)


@shape_rule(Op.SLICE)
def _slice_shape(x, *, starts, stops, steps):
    if not len(starts) == len(stops) == len(steps) == x.ndim:
        raise ShapeError(f"slice needs one start, stop and step per axis of {x}")
    shape = []
    for dim, start, stop, step in zip(x.shape, starts, stops, steps):
        if step <= 0 or not 0 <= start <= stop <= dim:
            raise ShapeError(f"slice {start}:{stop}:{step} is not normalized for a dim of {dim}")
        shape.append(len(range(start, stop, step)))
    return (TensorType(tuple(shape), x.dtype),)


@shape_rule(Op.PAD)
def _pad_shape(x, *, lows, highs, interiors):
    shape = tuple(
        lo + hi + d + max(d - 1, 0) * inner
        for d, lo, hi, inner in zip(x.shape, lows, highs, interiors)
    )
    if min((*lows, *highs, *interiors), default=0) < 0:
        raise ShapeError("pad widths must be non-negative")
    return (TensorType(shape, x.dtype),)


@shape_rule(Op.CONCATENATE)
def _concatenate_shape(*xs, axis):
    first = xs[0]
    for x in xs[1:]:
        if x.ndim != first.ndim or x.dtype != first.dtype or any(
            a != b for i, (a, b) in enumerate(zip(x.shape, first.shape)) if i != axis
        ):
            listed = ", ".join(map(str, xs))
            raise ShapeError(f"concatenate along axis {axis} needs matching other dims: {listed}")
    size = sum(x.shape[axis] for x in xs)
    return (TensorType(first.shape[:axis] + (size,) + first.shape[axis + 1 :], first.dtype),)


@shape_rule(*ops.REDUCTION)
def _reduce_shape(x, *, axes):
    axes = _normalize_axes(axes, x.ndim)
    return (TensorType(tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype),)


@shape_rule(Op.GATHER)
def _gather_shape(x, idx, *, axis):
    if idx.dtype.kind != "i":
        raise ShapeError(f"indices must be integers, got {idx}")
    if not 0 <= axis < x.ndim:
        raise ShapeError(f"gather axis {axis} is out of range for {x}")
    return (TensorType(x.shape[:axis] + idx.shape + x.shape[axis + 1 :], x.dtype),)


@shape_rule(Op.SCATTER_ADD)
def _scatter_add_shape(g, idx, *, axis, size):
    if idx.dtype.kind != "i":
        raise ShapeError(f"indices must be integers, got {idx}")
    if g.shape[axis : axis + idx.ndim] != idx.shape:
        raise ShapeError(f"scatter_add updates {g} do not match indices {idx} at axis {axis}")
    return (TensorType(g.shape[:axis] + (size,) + g.shape[axis + idx.ndim :], g.dtype),)


@shape_rule(Op.MATMUL)
def _matmul_shape(x, w):
    if x.ndim < 2 or w.ndim != x.ndim:
        raise ShapeError(f"matmul needs operands of equal rank >= 2, got {x} and {w}")
    if x.shape[:-2] != w.shape[:-2]:
        raise ShapeError(f"matmul batch dims differ: {x} and {w}")
    if x.shape[-1] != w.shape[-2]:
        raise ShapeError(
            f"matmul inner dimensions differ: {x} @ {w} ({x.shape[-1]} != {w.shape[-2]}); "
            f"the last axis of the left operand must equal the second-to-last of the right"
        )
    if x.dtype != w.dtype or not is_float(x.dtype):
        raise ShapeError(f"matmul needs two operands of one float dtype, got {x} and {w}")
    return (TensorType(x.shape[:-1] + w.shape[-1:], x.dtype),)


@shape_rule(Op.GEMM)
def _gemm_shape(a, b, x, *t, alpha, beta):
    """alpha [t] (a @ b) + beta x: a (m, k), b (k, n) and x (m, n) of one float dtype, t a 0-d
    value of that dtype, alpha and beta finite and nonzero."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ShapeError(f"gemm needs 2-D operands a (m, k) and b (k, n), got {a} and {b}")
    if x != TensorType((a.shape[0], b.shape[1]), a.dtype) or b.dtype != a.dtype \
            or not is_float(a.dtype):
        raise ShapeError(f"gemm accumulates a @ b ({a} @ {b}) into x of that product's type, "
                         f"got x {x}")
    if len(t) > 1 or any(s != TensorType((), a.dtype) for s in t):
        raise ShapeError(f"gemm takes at most one scale t, 0-d of {a.dtype}, got {t}")
    for name, c in (("alpha", alpha), ("beta", beta)):
        if not isinstance(c, float) or c == 0 or c != c or abs(c) == float("inf"):
            raise ShapeError(f"gemm {name} must be a finite nonzero float, got {c!r}")
    return (x,)


def conv_out_size(size: int, k: int, stride: int, lo: int, hi: int, dilation: int) -> int:
    """Output length of a correlation along one axis (padding lo/hi may be negative: crop)."""
    return (size + lo + hi - dilation * (k - 1) - 1) // stride + 1


@shape_rule(Op.CONV2D)
def _conv2d_shape(x, w, *, strides, padding, dilation):
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1]:
        raise ShapeError(f"conv2d needs x (N, C, H, W) and w (O, C, kh, kw), got {x} and {w}")
    if x.dtype != w.dtype or not is_float(x.dtype):
        raise ShapeError(f"conv2d needs two operands of one float dtype, got {x} and {w}")
    if min(strides) < 1 or min(dilation) < 1:
        raise ShapeError(f"conv2d strides and dilation must be positive: {strides} {dilation}")
    out = tuple(conv_out_size(x.shape[2 + a], w.shape[2 + a], strides[a], *padding[a],
                              dilation[a]) for a in range(2))
    if min(out) < 1:
        raise ShapeError(f"conv2d: kernel {w} does not fit the (padded) input {x}")
    return (TensorType((x.shape[0], w.shape[0]) + out, x.dtype),)


@shape_rule(Op.ATAN2, Op.FMOD)
def _library_binary_shape(x, y):
    shape = _same_shapes((x, y), "an elementwise op")
    if x.dtype != y.dtype or x.dtype == np.bool_:
        raise ShapeError(f"elementwise operands must share a numeric dtype, got {x} and {y}")
    return (TensorType(shape, x.dtype),)


@shape_rule(Op.ARGSORT)
def _argsort_shape(x):
    if x.ndim == 0 or x.dtype == np.bool_:
        raise ShapeError(f"argsort needs a numeric operand of rank >= 1, got {x}")
    return (TensorType(x.shape, np.int64),)


def _square_float(a: TensorType, what: str) -> None:
    if a.ndim < 2 or a.shape[-1] != a.shape[-2] or not is_float(a.dtype):
        raise ShapeError(f"{what} needs float (..., n, n) matrices, got {a}")


@shape_rule(Op.SOLVE)
def _solve_shape(a, b):
    _square_float(a, "solve")
    if b.ndim != a.ndim or b.shape[:-1] != a.shape[:-1] or b.dtype != a.dtype:
        raise ShapeError(f"solve needs b (..., n, k) with a's batch dims and dtype: {a}, {b}")
    return (b,)


@shape_rule(Op.SLOGDET)
def _slogdet_shape(a):
    _square_float(a, "slogdet")
    return (TensorType(a.shape[:-2] + (2,), a.dtype),)


@shape_rule(Op.CHOLESKY)
def _cholesky_shape(a):
    _square_float(a, "cholesky")
    return (a,)


@shape_rule(Op.RANDOM_UNIFORM)
def _random_shape(key, *, shape, dtype):
    if key.shape != () or key.dtype.kind != "i":
        raise ShapeError(f"a random key must be an integer scalar, got {key}")
    return (TensorType(shape, dtype),)


ALL_REDUCE_OPS = ("sum", "mean", "max", "min")


@shape_rule(Op.ALL_REDUCE)
def _all_reduce_shape(x, *, reduction, shapes):
    if reduction not in ALL_REDUCE_OPS:
        raise ShapeError(f"all_reduce op must be one of {ALL_REDUCE_OPS}, got {reduction!r}")
    if np.dtype(x.dtype).name not in ("float32", "float64", "int32", "int64"):
        raise ShapeError(f"all_reduce needs a float32, float64, int32 or int64 operand, got {x}")
    if reduction == "mean" and not is_float(x.dtype):
        raise ShapeError(f"all_reduce mean needs a float operand, got {x}")
    if sum(int(np.prod(s)) for s in shapes) != int(np.prod(x.shape)):
        raise ShapeError(f"all_reduce parts {list(shapes)} do not hold the {x} operand's "
                         "elements")
    return tuple(TensorType(tuple(s), x.dtype) for s in shapes)


@shape_rule(Op.FUSED)
def _fused_shape(*xs, body, **_):  # also kind, shape: used by codegen
    got = tuple(x.type for x in body.inputs)
    if got != tuple(xs):
        raise ShapeError(f"fused body expects {got}, got {xs}")
    return tuple(v.type for v in body.outputs)


def _types_text(types) -> str:
    return "(" + ", ".join(str(t) for t in types) + ")"


@shape_rule(Op.SCAN)
def _scan_shape(*xs, body, num_consts, num_carry, length, reverse):
    """consts, init and xs (scanned over their leading axis, `length` long) -> the final carry
    and the ys the body gives at each step, stacked on a new leading axis."""
    del reverse
    consts, init, seqs = (xs[:num_consts], xs[num_consts:num_consts + num_carry],
                          xs[num_consts + num_carry:])
    for x in seqs:
        if not x.shape or x.shape[0] != length:
            raise ShapeError(f"scan over {length} steps got a sequence {x} whose leading axis "
                             "is not that long")
    expect = (*consts, *init, *(TensorType(x.shape[1:], x.dtype) for x in seqs))
    got = tuple(v.type for v in body.inputs)
    if got != expect:
        raise ShapeError(f"scan body takes {_types_text(got)}, the scan gives it "
                         f"{_types_text(expect)}")
    outs = tuple(v.type for v in body.outputs)
    if outs[:num_carry] != tuple(init):
        raise ShapeError(f"scan body returns the carry {_types_text(outs[:num_carry])}, it "
                         f"must keep the carry's types {_types_text(init)}")
    return (*init, *(TensorType((length, *t.shape), t.dtype) for t in outs[num_carry:]))


@shape_rule(Op.WHILE)
def _while_shape(*xs, cond, body, num_cond_consts):
    """cond consts, body consts, init -> the carry once cond(carry) is false."""
    num_carry = len(body.outputs)
    init = xs[len(xs) - num_carry:]
    body_consts = xs[num_cond_consts:len(xs) - num_carry]
    if tuple(v.type for v in cond.inputs) != (*xs[:num_cond_consts], *init):
        raise ShapeError(f"while cond takes {_types_text(v.type for v in cond.inputs)}")
    if tuple(v.type for v in cond.outputs) != (TensorType((), np.dtype(np.bool_)),):
        raise ShapeError("while cond must return one bool scalar")
    if tuple(v.type for v in body.inputs) != (*body_consts, *init):
        raise ShapeError(f"while body takes {_types_text(v.type for v in body.inputs)}")
    if tuple(v.type for v in body.outputs) != tuple(init):
        raise ShapeError(f"while body returns {_types_text(v.type for v in body.outputs)}, "
                         f"it must keep the carry's types {_types_text(init)}")
    return tuple(init)
