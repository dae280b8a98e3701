"""Array creation inside traced code.

`np.zeros`, `np.ones`, `np.full`, `np.arange`, `np.linspace`, `np.eye`, `np.identity` with
static arguments run in NumPy as usual and become constants where they meet a tracer. What
needs help:

- `np.array([...])` / `np.asarray([...])` of traced values stacks them, as `jnp.array` does
  (so `np.array([x, y])` works), and `np.full(shape, traced)` broadcasts. These are not
  dispatched through `__array_function__`, so while a function is traced (`tracing_numpy()`,
  entered by compiler/api.py and compiler/transforms.py) `np.array`, `np.asarray` and
  `np.full` are wrappers that handle a traced argument and call NumPy's own function
  otherwise. The dtype follows NumPy's
  array coercion (a Python float beside float32 arrays gives float64, as eagerly).
- `np.linspace` with traced end points; `np.copy`, `np.empty_like`, `np.ascontiguousarray`.
- Writing a traced value into a NumPy array (`np.copyto`) raises an error that says what to
  use instead.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from compiler import numpy_api as N
from compiler import primitives as F
from compiler.errors import ShapeMismatchError, TracerConversionError
from compiler.tracing import Tracer

_NUMPY_ARRAY = np.array
_NUMPY_ASARRAY = np.asarray
_NUMPY_FULL = np.full
_lock = threading.Lock()
_depth = 0


def _holds_tracer(obj, depth: int = 0) -> bool:
    if isinstance(obj, Tracer):
        return True
    if isinstance(obj, (list, tuple)) and depth < 32:
        return any(_holds_tracer(item, depth + 1) for item in obj)
    return False


def _dtype_of(x) -> np.dtype:
    return x.dtype if isinstance(x, Tracer) else _NUMPY_ASARRAY(x).dtype


def _leaves(obj):
    if isinstance(obj, (list, tuple)):
        return [leaf for item in obj for leaf in _leaves(item)]
    return [obj]


def _build(obj, dtype, trace_like):
    if isinstance(obj, (list, tuple)):
        if not obj:
            raise ShapeMismatchError("np.array of an empty list beside traced values")
        parts = [_build(item, dtype, trace_like) for item in obj]
        shapes = {F.shape_of(p) for p in parts}
        if len(shapes) != 1:
            raise ShapeMismatchError(f"np.array: the elements have different shapes {shapes} "
                                     "(an inhomogeneous, ragged list)")
        return N.stack(parts, 0)
    if isinstance(obj, Tracer):
        return F.astype(obj, dtype)
    return N._lift(_NUMPY_ASARRAY(obj, dtype), trace_like)


def stack_traced(obj, dtype=None, ndmin: int = 0):
    """np.array(obj) where obj (a nested list or tuple) holds tracers: one stacked tracer."""
    leaves = _leaves(obj)
    tracers = [leaf for leaf in leaves if isinstance(leaf, Tracer)]
    if dtype is None:
        dtype = np.result_type(*(_dtype_of(leaf) for leaf in leaves))  # strong, as NumPy
    result = _build(obj, np.dtype(dtype), tracers)
    if result.ndim < ndmin:
        result = F.reshape(result, (1,) * (ndmin - result.ndim) + result.shape)
    return result


def array(object, dtype=None, *, copy=True, order="K", subok=False, ndmin=0, like=None):  # noqa: A002
    """np.array while tracing: stacks traced values, else NumPy's own np.array."""
    if _holds_tracer(object):
        return stack_traced(object, dtype, ndmin)
    kwargs = {"copy": copy, "order": order, "subok": subok, "ndmin": ndmin}
    if like is not None:
        kwargs["like"] = like
    return _NUMPY_ARRAY(object, dtype, **kwargs)


def asarray(a, dtype=None, order=None, **kwargs):
    """np.asarray while tracing: a traced value (or a list of them) stays traced."""
    if _holds_tracer(a):
        return stack_traced(a, dtype)
    return _NUMPY_ASARRAY(a, dtype, order, **kwargs)


def full(shape, fill_value, dtype=None, order="C", **kwargs):
    """np.full while tracing: a traced fill value is broadcast to the shape."""
    if _holds_tracer(fill_value):
        value = stack_traced(fill_value, dtype)
        shape = (shape,) if np.ndim(shape) == 0 else tuple(shape)
        return F.broadcast_to(value, shape)
    return _NUMPY_FULL(shape, fill_value, dtype, order, **kwargs)




@contextlib.contextmanager
def tracing_numpy():
    """While a function is traced, `np.array` and `np.asarray` stack traced values."""
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            np.array, np.asarray, np.full = array, asarray, full
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                np.array, np.asarray, np.full = _NUMPY_ARRAY, _NUMPY_ASARRAY, _NUMPY_FULL


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0, *,
             device=None):
    start, stop = N._lift(start, [start, stop]), N._lift(stop, [start, stop])
    if start.ndim or stop.ndim or axis != 0:
        raise ShapeMismatchError("np.linspace with traced end points needs scalar end points")
    num = int(num)
    div = (num - 1) if endpoint else num
    result_dtype = F.result_dtype(start, stop, 1.0)
    start, stop = F.astype(start, result_dtype), F.astype(stop, result_dtype)
    delta = F.subtract(stop, start)
    steps = np.arange(num, dtype=result_dtype)
    if div > 0:
        step = F.divide(delta, div)
        y = F.add(F.multiply(steps, step), start)
    else:
        step = F.multiply(delta, np.nan)
        y = F.add(F.multiply(steps, delta), start)
    if endpoint and num > 1:
        y = F.concatenate([N.getitem(y, slice(0, num - 1)), F.reshape(stop, (1,))], 0)
    if dtype is not None:
        y = F.astype(y, dtype)
    return (y, step) if retstep else y


def copyto(dst, src, casting="same_kind", where=True):
    raise TracerConversionError(
        "writing a traced value into a NumPy array (np.copyto, np.put, out=...): traced values "
        "exist only while the compiled code runs",
        fix="build the array from the traced value: np.full_like(x, v), "
        "np.broadcast_to(v, shape), or np.zeros(shape) + v",
    )


UFUNCS = {}
FUNCTIONS = {
    np.linspace: linspace, np.copyto: copyto, np.copy: lambda a, order="K", subok=False: a,
    np.ascontiguousarray: lambda a, dtype=None, **_: a if dtype is None else F.astype(a, dtype),
    np.empty_like: lambda x, dtype=None, **_: N.zeros_like(x, dtype),
    np.array_equal: lambda a, b, equal_nan=False: _array_equal(a, b, equal_nan),
}
TRACER_METHODS = {"copy": lambda x, order="C": x}


def _array_equal(a, b, equal_nan):
    if F.shape_of(a) != F.shape_of(b):
        return False
    same = F.equal(a, b)
    if equal_nan:
        same = F.where(F.not_equal(a, a), F.not_equal(b, b), same)
    return F.equal(N.sum(F.astype(F.equal(same, False), np.int64)), 0)
