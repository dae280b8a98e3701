"""Frontend functions: one per primitive, taking tracers, NumPy arrays or Python scalars.

These are what the tracer's operators, the NumPy dispatch table, the VJP rules and `nn` are
written with. Each one applies NumPy's promotion rules (Python scalars are weak: float32 stays
float32), inserts explicit `broadcast_to` nodes, and emits one primitive. With no tracer among
its operands a function runs eagerly on NumPy, so code written with it also runs untraced.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compiler.errors import ShapeMismatchError, TraceError, UnsupportedError
from compiler.tracing import Trace, Tracer
from ir.interpreter import EVAL_RULES
from ir.ops import Op
from ir.types import DTYPES, TensorType, is_python_scalar

# Python scalar stand-ins that make np.result_type treat a weak tracer like a Python scalar.
_WEAK_STANDIN = {"f": 0.0, "i": 0, "u": 0, "b": False}


def trace_of(args: Sequence) -> Trace | None:
    trace = None
    for arg in args:
        if isinstance(arg, Tracer):
            if trace is not None and arg.trace is not trace:
                if trace.encloses(arg.trace):  # a loop body's value: record in the body
                    trace = arg.trace
                    continue
                if arg.trace.encloses(trace):  # a value the body closes over
                    continue
                raise TraceError(
                    "a traced value from another trace was used here (a tracer escaped its "
                    "function, for example stored in a global or a closure cell)",
                    fix="pass the value in as an argument instead",
                )
            trace = arg.trace
    return trace


def _standin(x):
    if isinstance(x, Tracer):
        return _WEAK_STANDIN[x.dtype.kind] if x.weak else x.dtype
    if is_python_scalar(x):
        return x
    if isinstance(x, complex):
        raise UnsupportedError("complex numbers are not supported")
    return np.asarray(x).dtype


def result_dtype(*args) -> np.dtype:
    """NumPy 2 promotion (NEP 50): Python scalars and weak tracers adopt the array's dtype."""
    dtype = np.result_type(*(_standin(a) for a in args))
    if dtype not in DTYPES:
        listed = ", ".join(str(t) for t in DTYPES)
        raise UnsupportedError(f"dtype {dtype} is not supported (chainjit supports {listed})",
                               fix="cast the input with .astype(np.float32)")
    return dtype


def _all_weak(args) -> bool:
    return all(
        (isinstance(a, Tracer) and a.weak)
        or is_python_scalar(a)
        for a in args
    )


def shape_of(x) -> tuple[int, ...]:
    return x.shape if isinstance(x, Tracer) else np.shape(x)


def to_var(trace: Trace, x, dtype: np.dtype | None = None):
    """The IR value for `x` in `trace`, cast to `dtype` when one is given."""
    if isinstance(x, Tracer):
        var = x.ir_var
        if dtype is not None and var.dtype != dtype:
            (var,) = trace.emit(Op.CAST, (var,), {"dtype": np.dtype(dtype)})
        return var
    value = np.asarray(x, dtype=dtype)
    if value.dtype not in DTYPES:
        value = value.astype(result_dtype(value))
    return trace.constant(value)


def wrap(trace: Trace, var, weak: bool = False) -> Tracer:
    return trace.wrap(var, weak)


def apply(op: Op, args: Sequence, params: dict | None = None, weak: bool = False):
    """Emit `op` on already-promoted, already-broadcast operands (or evaluate it eagerly)."""
    params = params or {}
    trace = trace_of(args)
    if trace is None:
        with np.errstate(all="ignore"):
            return np.asarray(EVAL_RULES[op](*(np.asarray(a) for a in args), **params))
    (out,) = trace.emit(op, [to_var(trace, a) for a in args], params)
    return wrap(trace, out, weak)


# -- broadcasting and casting -------------------------------------------------------------


def broadcast_shapes(*args, what: str = "operands") -> tuple[int, ...]:
    shapes = [shape_of(a) for a in args]
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        listed = " and ".join(str(_type_str(a)) for a in args)
        raise ShapeMismatchError(
            f"cannot broadcast {what} {listed}: trailing dimensions must be equal or 1",
            fix="reshape an operand (for example x[:, None] or x.reshape(-1, 1)) or check the "
            "layer sizes",
        ) from None


class ShapeOnly:
    """Stands for an array of `shape` in shape checks (never allocated: a broadcast target
    may be far larger than memory)."""

    def __init__(self, shape, dtype=np.bool_):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)


def _type_str(x) -> str:
    if isinstance(x, Tracer):
        return str(x.ir_var.type)
    if isinstance(x, ShapeOnly):
        return str(x.shape)
    a = np.asarray(x)
    return str(TensorType(a.shape, a.dtype)) if a.dtype in DTYPES else f"{a.dtype}{list(a.shape)}"


def broadcast_to(x, shape: Sequence[int]):
    shape = tuple(int(d) for d in shape)
    if shape_of(x) == shape:
        return x
    if not isinstance(x, Tracer):
        return np.broadcast_to(x, shape)
    broadcast_shapes(x, ShapeOnly(shape), what="to the target shape:")
    return apply(Op.BROADCAST_TO, [x], {"shape": shape}, weak=x.weak)


def astype(x, dtype):
    dtype = np.dtype(dtype)
    if not isinstance(x, Tracer):
        return np.asarray(x).astype(dtype)
    if x.dtype == dtype:
        return x
    return apply(Op.CAST, [x], {"dtype": dtype})


def _elementwise(op: Op, np_fn, args, float_only: bool = False):
    trace = trace_of(args)
    if trace is None:
        with np.errstate(all="ignore"):
            return np_fn(*args)
    dtype = result_dtype(*args)
    if float_only and dtype.kind != "f":
        dtype = np.dtype(np.float64)  # as NumPy: np.exp(int array) is float64
    shape = broadcast_shapes(*args)
    weak = _all_weak(args)
    operands = [broadcast_to(wrap(trace, to_var(trace, a, dtype), weak), shape) for a in args]
    return apply(op, operands, weak=weak)


def _unary(op: Op, np_fn, float_only: bool = True):
    def fn(x):
        return _elementwise(op, np_fn, [x], float_only)

    fn.__name__ = np_fn.__name__ if hasattr(np_fn, "__name__") else op.value
    fn.__doc__ = f"Elementwise {op.value} (primitive Op.{op.name})."
    return fn


def _binary(op: Op, np_fn, float_only: bool = False):
    def fn(x, y):
        return _elementwise(op, np_fn, [x, y], float_only)

    fn.__name__ = np_fn.__name__
    fn.__doc__ = f"Elementwise {op.value} with NumPy broadcasting (primitive Op.{op.name})."
    return fn


def _sigmoid_numpy(x):
    return 0.5 * np.tanh(0.5 * x) + 0.5


negative = _unary(Op.NEG, np.negative, float_only=False)
exp = _unary(Op.EXP, np.exp)
log = _unary(Op.LOG, np.log)
log1p = _unary(Op.LOG1P, np.log1p)
expm1 = _unary(Op.EXPM1, np.expm1)
sqrt = _unary(Op.SQRT, np.sqrt)
tanh = _unary(Op.TANH, np.tanh)
sigmoid = _unary(Op.LOGISTIC, _sigmoid_numpy)
sin = _unary(Op.SIN, np.sin)
cos = _unary(Op.COS, np.cos)
absolute = _unary(Op.ABS, np.abs, float_only=False)
sign = _unary(Op.SIGN, np.sign, float_only=False)

add = _binary(Op.ADD, np.add)
subtract = _binary(Op.SUB, np.subtract)
multiply = _binary(Op.MUL, np.multiply)
divide = _binary(Op.DIV, np.divide, float_only=True)
maximum = _binary(Op.MAX, np.maximum)
minimum = _binary(Op.MIN, np.minimum)
less = _binary(Op.LT, np.less)
less_equal = _binary(Op.LE, np.less_equal)
greater = _binary(Op.GT, np.greater)
greater_equal = _binary(Op.GE, np.greater_equal)
equal = _binary(Op.EQ, np.equal)
not_equal = _binary(Op.NE, np.not_equal)


def power(x, y):
    """x ** y. Small constant integer exponents become multiplies (exact, and differentiable
    everywhere); anything else is the POW primitive."""
    if not isinstance(y, Tracer) and np.ndim(y) == 0 and trace_of([x]) is not None:
        y_value = float(y)
        if y_value == 2.0:
            return multiply(x, x)
        if y_value == 1.0:
            return x
        if y_value == 0.5:
            return sqrt(x)
        if y_value == -1.0:
            return divide(1.0, x)
    return _elementwise(Op.POW, np.power, [x, y])


def where(cond, x, y):
    """np.where(cond, x, y) with broadcasting; cond is converted to bool."""
    trace = trace_of([cond, x, y])
    if trace is None:
        return np.where(cond, x, y)
    dtype = result_dtype(x, y)
    shape = broadcast_shapes(cond, x, y)
    cond_var = to_var(trace, cond)
    if cond_var.dtype != np.bool_:
        cond_var = not_equal(wrap(trace, cond_var), 0).ir_var
    weak = _all_weak([x, y])
    branches = [wrap(trace, to_var(trace, a, dtype), weak) for a in (x, y)]
    operands = [wrap(trace, cond_var), *branches]
    return apply(Op.WHERE, [broadcast_to(o, shape) for o in operands], weak=weak)


def stop_gradient(x):
    """The value of `x`, with a zero derivative (for example the max in a stable softmax)."""
    if not isinstance(x, Tracer):
        return x
    return apply(Op.STOP_GRADIENT, [x], weak=x.weak)


# -- movement -----------------------------------------------------------------------------


def reshape(x, shape: Sequence[int]):
    shape = tuple(int(d) for d in shape)
    if not isinstance(x, Tracer):
        return np.reshape(x, shape)
    if shape == x.shape:
        return x
    return apply(Op.RESHAPE, [x], {"shape": shape}, weak=x.weak)


def transpose(x, perm: Sequence[int]):
    perm = tuple(int(p) for p in perm)
    if not isinstance(x, Tracer):
        return np.transpose(x, perm)
    if perm == tuple(range(x.ndim)):
        return x
    return apply(Op.TRANSPOSE, [x], {"perm": perm}, weak=x.weak)


def slice_(x, starts, stops, steps):
    """x[start:stop:step, ...] for normalized, positive-step slices on every axis."""
    if not isinstance(x, Tracer):
        return x[tuple(map(slice, starts, stops, steps))]
    if tuple(starts) == (0,) * x.ndim and tuple(stops) == x.shape and set(steps) <= {1}:
        return x
    params = {"starts": tuple(starts), "stops": tuple(stops), "steps": tuple(steps)}
    return apply(Op.SLICE, [x], params, weak=x.weak)


def pad(x, lows, highs, interiors=None):
    """Zeros around (lows/highs per axis) and between (interiors) the elements of x."""
    interiors = tuple(interiors) if interiors is not None else (0,) * len(lows)
    params = {"lows": tuple(lows), "highs": tuple(highs), "interiors": interiors}
    return apply(Op.PAD, [x], params)


def concatenate(xs: Sequence, axis: int = 0):
    if trace_of(xs) is None:
        return np.concatenate(xs, axis)
    dtype = result_dtype(*xs)
    trace = trace_of(xs)
    operands = [wrap(trace, to_var(trace, x, dtype)) for x in xs]
    ndim = operands[0].ndim
    if not -ndim <= axis < ndim:
        raise ShapeMismatchError(f"concatenate axis {axis} is out of range for rank {ndim}",
                                 fix=f"use an axis in [-{ndim}, {ndim}), or np.stack to "
                                 "join along a new axis")
    return apply(Op.CONCATENATE, operands, {"axis": axis % ndim})


# -- reductions, indexing, contraction, randomness ----------------------------------------


def _reduce(op: Op, x, axes: Sequence[int]):
    axes = tuple(sorted(int(a) % max(np.ndim(x) if not isinstance(x, Tracer) else x.ndim, 1)
                        for a in axes))
    if not axes:
        return x
    return apply(op, [x], {"axes": axes})


def reduce_sum(x, axes: Sequence[int]):
    return _reduce(Op.REDUCE_SUM, x, axes)


def reduce_max(x, axes: Sequence[int]):
    return _reduce(Op.REDUCE_MAX, x, axes)


def reduce_prod(x, axes: Sequence[int]):
    return _reduce(Op.REDUCE_PROD, x, axes)


def gather(x, indices, axis: int):
    """np.take(x, indices, axis): the indexed axis is replaced by the indices' shape."""
    return apply(Op.GATHER, [x, indices], {"axis": int(axis)})


def scatter_add(updates, indices, axis: int, size: int):
    """The adjoint of gather: zeros of length `size` at `axis`, updates added at `indices`."""
    return apply(Op.SCATTER_ADD, [updates, indices], {"axis": int(axis), "size": int(size)})


def matmul_primitive(x, w):
    """(..., m, k) @ (..., k, n) on equal-rank operands with equal batch dims."""
    return apply(Op.MATMUL, [x, w])


def conv2d_primitive(x, w, strides, padding, dilation):
    """The CONV2D primitive on two arrays of one float dtype: NCHW cross-correlation with
    `padding` ((lo, hi), (lo, hi)) (negative crops), `strides` and `dilation` pairs."""
    params = {"strides": tuple(int(s) for s in strides),
              "padding": tuple((int(lo), int(hi)) for lo, hi in padding),
              "dilation": tuple(int(d) for d in dilation)}
    return apply(Op.CONV2D, [x, w], params)


def random_uniform(key, shape: Sequence[int], dtype=np.float32):
    """Uniform [0, 1) numbers, a pure function of an integer key (counter-based)."""
    trace = trace_of([key])
    params = {"shape": tuple(int(d) for d in shape), "dtype": np.dtype(dtype)}
    if trace is None:
        return apply(Op.RANDOM_UNIFORM, [np.asarray(key, np.int64)], params)
    return apply(Op.RANDOM_UNIFORM, [astype(key, np.int64)], params)
