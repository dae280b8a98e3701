"""NumPy's API on tracers, its core: the functions users call (`np.sum(x, axis=1)`,
`x.reshape(...)`, `x @ w`), written with the primitives (compiler/primitives.py), and this
module's part of the tables NumPy reaches through `__array_ufunc__` (`UFUNCS`),
`__array_function__` (`FUNCTIONS`) and the ndarray methods (`TRACER_METHODS`).

compiler/numpy_math.py, numpy_reduce.py, numpy_shape.py, numpy_linalg.py and
numpy_creation.py hold the rest of NumPy, each with tables of its own; compiler/numpy_dispatch.py
merges them and answers NumPy's dispatch.
"""

from __future__ import annotations

import numpy as np

from compiler import primitives as F
from compiler.einsum import einsum
from compiler.errors import ShapeMismatchError, TracerConversionError, UnsupportedError
from compiler.indexing import getitem
from compiler.tracing import Tracer


def _axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    for a in axes:
        if not -ndim <= int(a) < ndim:
            raise ShapeMismatchError(f"axis {a} is out of bounds for an array of rank {ndim}",
                                     fix=f"use an axis in [-{ndim}, {ndim}), or None for all")
    return tuple(sorted(int(a) % ndim for a in axes))


def _keep(x, result, axes, keepdims):
    if not keepdims:
        return result
    return F.reshape(result, tuple(1 if i in axes else d for i, d in enumerate(x.shape)))


def _no_out(out, name):
    if out is not None:
        raise TracerConversionError(f"{name}(..., out=...) writes into an array in place",
                                    fix="drop out= and use the returned value")


# -- reductions ------------------------------------------------------------------------------


def sum(x, axis=None, dtype=None, out=None, keepdims=False, **_):  # noqa: A001
    _no_out(out, "sum")
    x = F.astype(x, dtype) if dtype is not None else x
    if x.dtype == np.bool_ or (x.dtype.kind == "i" and x.dtype.itemsize < 8):
        x = F.astype(x, np.int64)  # NumPy sums bools and small ints in the default int
    axes = _axes(axis, x.ndim)
    return _keep(x, F.reduce_sum(x, axes), axes, keepdims)


def mean(x, axis=None, dtype=None, out=None, keepdims=False, **_):
    _no_out(out, "mean")
    if x.dtype.kind != "f":
        x = F.astype(x, dtype or np.float64)
    axes = _axes(axis, x.ndim)
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    return F.divide(sum(x, axes, keepdims=keepdims), count)


def amax(x, axis=None, out=None, keepdims=False, **_):
    _no_out(out, "max")
    axes = _axes(axis, x.ndim)
    return _keep(x, F.reduce_max(x, axes), axes, keepdims)


def amin(x, axis=None, out=None, keepdims=False, **_):
    _no_out(out, "min")
    return F.negative(amax(F.negative(x), axis, keepdims=keepdims))


def prod(x, axis=None, dtype=None, out=None, keepdims=False, **_):
    _no_out(out, "prod")
    x = F.astype(x, dtype) if dtype is not None else x
    axes = _axes(axis, x.ndim)
    return _keep(x, F.reduce_prod(x, axes), axes, keepdims)


def var(x, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **_):
    _no_out(out, "var")
    if x.dtype.kind != "f":
        x = F.astype(x, dtype or np.float64)
    axes = _axes(axis, x.ndim)
    centered = F.subtract(x, mean(x, axes, keepdims=True))
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64)) - ddof
    return F.divide(sum(F.multiply(centered, centered), axes, keepdims=keepdims), count)


def std(x, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **_):
    return F.sqrt(var(x, axis, dtype, out, ddof, keepdims))


# -- shape manipulation ----------------------------------------------------------------------


def reshape(x, *shape, order="C", newshape=None):
    if order != "C":
        raise UnsupportedError(f"reshape(order={order!r}); only C order is supported")
    if newshape is not None:
        shape = (newshape,)
    if len(shape) == 1 and not isinstance(shape[0], int):
        shape = tuple(shape[0])
    shape = list(shape)
    if shape.count(-1) > 1:
        raise ShapeMismatchError("reshape can only infer one dimension (-1)",
                                 fix="give every other dimension explicitly")
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
        if known == 0 or x.size % known:
            raise ShapeMismatchError(f"cannot reshape {x.ir_var.type} into {tuple(shape)}",
                                     fix=f"the known dimensions must divide {x.size}")
        shape[shape.index(-1)] = x.size // known
    if int(np.prod(shape, dtype=np.int64)) != x.size:
        raise ShapeMismatchError(
            f"cannot reshape {x.ir_var.type} ({x.size} elements) into shape {tuple(shape)}",
            fix=f"the new shape must hold {x.size} elements; use -1 for one inferred "
            "dimension",
        )
    return F.reshape(x, shape)


def transpose(x, *axes, **kwargs):
    if "axes" in kwargs:  # np.transpose(x, axes=...)
        if axes:
            raise TypeError("transpose() got multiple values for argument 'axes'")
        axes = (kwargs.pop("axes"),)
    if kwargs:
        raise TypeError(f"transpose() got an unexpected keyword argument {next(iter(kwargs))!r}")
    if len(axes) == 1 and axes[0] is not None and not isinstance(axes[0], int):
        axes = tuple(axes[0])
    if not axes or axes == (None,):
        axes = tuple(reversed(range(x.ndim)))
    return F.transpose(x, [a % x.ndim for a in axes])


def swapaxes(x, axis1, axis2):
    perm = list(range(x.ndim))
    a, b = axis1 % x.ndim, axis2 % x.ndim
    perm[a], perm[b] = perm[b], perm[a]
    return F.transpose(x, perm)


def moveaxis(x, source, destination):
    perm = [a for a in range(x.ndim) if a != source % x.ndim]
    perm.insert(destination % x.ndim, source % x.ndim)
    return F.transpose(x, perm)


def expand_dims(x, axis):
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    ndim = x.ndim + len(axes)
    axes = {a % ndim for a in axes}
    dims = iter(x.shape)
    return F.reshape(x, [1 if i in axes else next(dims) for i in range(ndim)])


def squeeze(x, axis=None):
    if axis is None:
        axes = {i for i, d in enumerate(x.shape) if d == 1}
    else:
        axes = set(_axes(axis, x.ndim))
        if any(x.shape[a] != 1 for a in axes):
            raise ShapeMismatchError(
                f"cannot squeeze an axis whose size is not 1 in {x.ir_var.type}",
                fix="squeeze only axes of size 1, or call squeeze() to drop all of them",
            )
    return F.reshape(x, [d for i, d in enumerate(x.shape) if i not in axes])


def ravel(x, order="C"):
    return reshape(x, -1, order=order)


def broadcast_to(x, shape, subok=False):
    shape = (shape,) if np.ndim(shape) == 0 else tuple(shape)
    return F.broadcast_to(x, shape)


def concatenate(arrays, axis=0, out=None, dtype=None, **_):
    _no_out(out, "concatenate")
    if axis is None:
        arrays = [ravel(a) for a in arrays]
        axis = 0
    result = F.concatenate(list(arrays), axis)
    return F.astype(result, dtype) if dtype is not None else result


def stack(arrays, axis=0, out=None, **_):
    _no_out(out, "stack")
    arrays = list(arrays)
    ndim = len(F.shape_of(arrays[0])) + 1
    return F.concatenate([expand_dims(_lift(a, arrays), axis % ndim) for a in arrays], axis % ndim)


def split(x, indices_or_sections, axis=0):
    axis %= x.ndim
    dim = x.shape[axis]
    if np.ndim(indices_or_sections) == 0:
        sections = int(indices_or_sections)
        if dim % sections:
            raise ShapeMismatchError(f"array split does not result in an equal division: "
                                     f"{dim} into {sections}",
                                     fix="give split points (np.split(x, [i, j])) or a "
                                     f"number of sections that divides {dim}")
        bounds = [dim // sections * k for k in range(sections + 1)]
    else:
        bounds = [0, *(min(int(i), dim) for i in indices_or_sections), dim]
    pieces = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, max(start, stop))
        pieces.append(getitem(x, tuple(index)))
    return pieces


def _lift(a, siblings):
    """A NumPy array beside tracers becomes a constant of their trace."""
    if isinstance(a, Tracer):
        return a
    trace = F.trace_of(siblings)
    return F.wrap(trace, trace.constant(np.asarray(a)))


# -- elementwise helpers -----------------------------------------------------------------------


def clip(x, a_min=None, a_max=None, out=None, **kwargs):
    _no_out(out, "clip")
    a_min = kwargs.get("min", a_min)
    a_max = kwargs.get("max", a_max)
    if a_min is not None:
        x = F.maximum(x, a_min)
    if a_max is not None:
        x = F.minimum(x, a_max)
    return x


def square(x, out=None, **_):
    _no_out(out, "square")
    return F.multiply(x, x)


def reciprocal(x, out=None, **_):
    _no_out(out, "reciprocal")
    return F.divide(1.0, x)


def floor_divide(x, y):
    raise UnsupportedError("floor division (//) is not supported on traced values",
                           fix="use true division (/), or compute the integer on static values")


def astype(x, dtype, order="K", casting="unsafe", subok=True, copy=True):
    return F.astype(x, dtype)


def zeros_like(x, dtype=None, **_):
    return full_like(x, 0, dtype)


def ones_like(x, dtype=None, **_):
    return full_like(x, 1, dtype)


def full_like(x, fill_value, dtype=None, **_):
    dtype = np.dtype(dtype) if dtype is not None else x.dtype
    return F.broadcast_to(_lift(np.asarray(fill_value, dtype), [x]), x.shape)


def where(condition, x=None, y=None):
    if x is None or y is None:
        raise UnsupportedError("np.where(cond) with one argument has a data-dependent shape",
                               fix="use np.where(cond, a, b)")
    return F.where(condition, x, y)


# -- contractions -----------------------------------------------------------------------------


def matmul(x, w, out=None, **_):
    _no_out(out, "matmul")
    sx, sw = F.shape_of(x), F.shape_of(w)
    if len(sx) == 0 or len(sw) == 0:
        raise ShapeMismatchError("matmul: operands must not be scalars",
                                 fix="multiply by a scalar with *")
    dtype = F.result_dtype(x, w)
    if dtype.kind != "f":
        dtype = np.dtype(np.float64)
    x, w = F.astype(x, dtype), F.astype(w, dtype)
    x = _lift(x, [x, w])
    w = _lift(w, [x, w])
    if len(sx) == 1 or len(sw) == 1:  # NumPy: a vector is a matrix, its added axis dropped
        x2 = F.reshape(x, (1, sx[0])) if len(sx) == 1 else x
        w2 = F.reshape(w, (sw[0], 1)) if len(sw) == 1 else w
        out = matmul(x2, w2)
        shape = list(out.shape)
        if len(sw) == 1:
            del shape[-1]
        if len(sx) == 1:
            del shape[-1 if len(sw) == 1 else -2]
        return F.reshape(out, shape)
    if sx[-1] != sw[-2]:
        raise ShapeMismatchError(
            f"matmul: inner dimensions differ: {x.ir_var.type} @ {w.ir_var.type} "
            f"({sx[-1]} != {sw[-2]}); the left operand's last axis must equal the right "
            "operand's second-to-last",
            fix="transpose an operand (w.T) or check the layer sizes",
        )
    if len(sw) == 2 and len(sx) > 2:  # (..., m, k) @ (k, n): one big 2-D matmul
        flat = F.matmul_primitive(F.reshape(x, (int(np.prod(sx[:-1])), sx[-1])), w)
        return F.reshape(flat, sx[:-1] + sw[-1:])
    batch = F.broadcast_shapes(F.ShapeOnly(sx[:-2]), F.ShapeOnly(sw[:-2]),
                               what="matmul batch dims")
    x = F.broadcast_to(x, batch + sx[-2:])
    w = F.broadcast_to(w, batch + sw[-2:])
    return F.matmul_primitive(x, w)


def dot(x, w, out=None):
    _no_out(out, "dot")
    if len(F.shape_of(x)) == 0 or len(F.shape_of(w)) == 0:
        return F.multiply(x, w)
    if len(F.shape_of(w)) > 2:
        raise UnsupportedError("np.dot with a right operand of rank > 2",
                               fix="use np.matmul or np.einsum, whose batching is explicit")
    return matmul(x, w)


def vdot(x, w):
    return sum(F.multiply(ravel(_lift(x, [x, w])), ravel(_lift(w, [x, w]))))


def outer(x, w, out=None):
    _no_out(out, "outer")
    x, w = ravel(_lift(x, [x, w])), ravel(_lift(w, [x, w]))
    return F.multiply(F.reshape(x, (x.size, 1)), F.reshape(w, (1, w.size)))


def take(x, indices, axis=None, out=None, mode=None):
    _no_out(out, "take")
    if axis is None:
        x, axis = ravel(x), 0
    return F.gather(x, indices, axis % x.ndim)


def take_along_axis(x, indices, axis):
    axis %= x.ndim
    index = []
    for a, d in enumerate(x.shape):
        if a == axis:
            index.append(indices)
        else:
            shape = [1] * x.ndim
            shape[a] = d
            index.append(np.arange(d).reshape(shape))
    # Integer arrays on every axis: one flat gather (see compiler/indexing.py).
    return getitem(x, tuple(index))


# -- dispatch tables --------------------------------------------------------------------------

# NumPy ufunc -> primitive or composite, reached through ArrayTracer.__array_ufunc__.
UFUNCS = {
    np.add: F.add, np.subtract: F.subtract, np.multiply: F.multiply, np.divide: F.divide,
    np.power: F.power, np.maximum: F.maximum, np.minimum: F.minimum,
    np.fmax: F.maximum, np.fmin: F.minimum,
    np.less: F.less, np.less_equal: F.less_equal, np.greater: F.greater,
    np.greater_equal: F.greater_equal, np.equal: F.equal, np.not_equal: F.not_equal,
    np.negative: F.negative, np.positive: lambda x: x, np.exp: F.exp, np.log: F.log,
    np.log1p: F.log1p, np.expm1: F.expm1, np.sqrt: F.sqrt, np.tanh: F.tanh, np.sin: F.sin,
    np.cos: F.cos, np.absolute: F.absolute, np.sign: F.sign, np.square: square,
    np.reciprocal: reciprocal, np.matmul: matmul, np.floor_divide: floor_divide,
}
# ufunc.reduce -> reduction (np.add.reduce(x, axis) and friends).
UFUNC_REDUCTIONS = {np.add: sum, np.maximum: amax, np.minimum: amin, np.multiply: prod}

# NumPy function -> implementation, reached through ArrayTracer.__array_function__.
FUNCTIONS = {
    np.sum: sum, np.mean: mean, np.max: amax, np.min: amin, np.amax: amax, np.amin: amin,
    np.prod: prod, np.var: var, np.std: std,
    np.reshape: reshape, np.transpose: transpose, np.swapaxes: swapaxes, np.moveaxis: moveaxis,
    np.expand_dims: expand_dims, np.squeeze: squeeze, np.ravel: ravel,
    np.broadcast_to: broadcast_to, np.concatenate: concatenate, np.stack: stack, np.split: split,
    np.clip: clip, np.where: where, np.zeros_like: zeros_like, np.ones_like: ones_like,
    np.full_like: full_like, np.dot: dot, np.vdot: vdot, np.matmul: matmul, np.outer: outer,
    np.einsum: einsum, np.take: take, np.take_along_axis: take_along_axis,
    np.shape: lambda x: x.shape, np.ndim: lambda x: x.ndim, np.size: lambda x: x.size,
}

# ndarray methods available on tracers.
TRACER_METHODS = {
    "sum": sum, "mean": mean, "max": amax, "min": amin, "prod": prod, "var": var, "std": std,
    "reshape": reshape, "transpose": transpose, "swapaxes": swapaxes, "squeeze": squeeze,
    "ravel": ravel, "flatten": ravel, "astype": astype, "clip": clip, "dot": dot,
    "take": take,
}
