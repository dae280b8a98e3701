"""NumPy's reductions, scans, sorting and selection on tracers beyond compiler/numpy_api.py's
core: cumsum cumprod diff average all any count_nonzero argmax argmin ptp, sort argsort
searchsorted select.

Scans are log-depth (Hillis-Steele): ⌈log2 n⌉ steps of "add the array shifted by 2^k" built
from SLICE and PAD, so they are exact to rounding like a sequential sum (no 0·inf products
as a triangular matmul would make), cost O(n log n), and differentiate through slice and pad.
Sorting gathers through the ARGSORT primitive's permutation (take_along_axis), so the
gradient of sort flows back through that permutation. Index results have no gradient.
"""

from __future__ import annotations

import numpy as np

from compiler import numpy_api as N
from compiler import primitives as F
from compiler import primitives_extra as E
from compiler.errors import ShapeMismatchError, UnsupportedError
from compiler.tracing import Tracer


def _axis(axis, ndim: int) -> int:
    (a,) = N._axes(axis, ndim)
    return a


def _shift(x, axis: int, k: int):
    """x moved k places along `axis`, zeros shifted in at the start."""
    n = x.shape[axis]
    starts = (0,) * x.ndim
    stops = tuple(n - k if a == axis else d for a, d in enumerate(x.shape))
    lows = tuple(k if a == axis else 0 for a in range(x.ndim))
    return F.pad(F.slice_(x, starts, stops, (1,) * x.ndim), lows, (0,) * x.ndim)


def _scan(x, axis: int, combine, identity: float):
    n, k = x.shape[axis], 1
    while k < n:
        shifted = _shift(x, axis, k)
        if identity != 0:  # the shifted-in places hold the identity, not zero
            mask = np.zeros([d if a == axis else 1 for a, d in enumerate(x.shape)], x.dtype)
            mask[tuple(slice(0, k) if a == axis else slice(None) for a in range(x.ndim))] = \
                identity
            shifted = F.add(shifted, mask)
        x = combine(x, shifted)
        k *= 2
    return x


def _scan_input(x, axis, dtype):
    if dtype is not None:
        x = F.astype(x, dtype)
    elif x.dtype == np.bool_ or (x.dtype.kind == "i" and x.dtype.itemsize < 8):
        x = F.astype(x, np.int64)  # as np.sum: the default int
    if axis is None:
        return N.ravel(x), 0
    return x, _axis(axis, x.ndim)


def cumsum(x, axis=None, dtype=None, out=None):
    N._no_out(out, "cumsum")
    x, axis = _scan_input(x, axis, dtype)
    return _scan(x, axis, F.add, 0)


def cumprod(x, axis=None, dtype=None, out=None):
    N._no_out(out, "cumprod")
    x, axis = _scan_input(x, axis, dtype)
    return _scan(x, axis, F.multiply, 1)


def diff(x, n=1, axis=-1, prepend=None, append=None):
    axis = _axis(axis, x.ndim)
    ends = []
    for end in (prepend, append):
        if end is not None:
            end = N._lift(end, [x])
            if end.ndim == 0:  # a scalar: one slice of x's shape
                end = F.broadcast_to(end, [1 if a == axis else d for a, d in enumerate(x.shape)])
        ends.append(end)
    if any(e is not None for e in ends):
        x = F.concatenate([e for e in (ends[0], x, ends[1]) if e is not None], axis)
    for _ in range(n):
        size = x.shape[axis]
        lo = tuple(1 if a == axis else 0 for a in range(x.ndim))
        hi = tuple(size - 1 if a == axis else d for a, d in enumerate(x.shape))
        head = F.slice_(x, (0,) * x.ndim, hi, (1,) * x.ndim)
        tail = F.slice_(x, lo, x.shape, (1,) * x.ndim)
        x = F.not_equal(tail, head) if x.dtype == np.bool_ else F.subtract(tail, head)
    return x


def average(x, axis=None, weights=None, returned=False, keepdims=False):
    if weights is None:
        avg = N.mean(x, axis, keepdims=keepdims)
        count = int(np.prod([x.shape[a] for a in N._axes(axis, x.ndim)], dtype=np.int64))
        total = N.full_like(avg, count)
    else:
        w = N._lift(weights, [x])
        if w.shape != x.shape:
            if axis is None or w.ndim != 1:
                raise ShapeMismatchError("np.average: weights differ in shape from the array; "
                                         "1-D weights need an axis")
            a = _axis(axis, x.ndim)
            w = F.reshape(w, [x.shape[a] if k == a else 1 for k in range(x.ndim)])
        dtype = F.result_dtype(x, w)
        if dtype.kind != "f":
            dtype = np.dtype(np.float64)
        x, w = F.astype(x, dtype), F.astype(F.broadcast_to(w, x.shape), dtype)
        total = N.sum(w, axis, keepdims=keepdims)
        avg = F.divide(N.sum(F.multiply(x, w), axis, keepdims=keepdims), total)
    return (avg, total) if returned else avg


def _bools(x):
    return x if x.dtype == np.bool_ else F.not_equal(x, 0)


def count_nonzero(x, axis=None, keepdims=False):
    return N.sum(F.astype(_bools(x), np.int64), axis, keepdims=keepdims)


def any_(x, axis=None, out=None, keepdims=False, **_):
    N._no_out(out, "any")
    return F.greater(count_nonzero(x, axis, keepdims), 0)


def all_(x, axis=None, out=None, keepdims=False, **_):
    N._no_out(out, "all")
    return F.equal(count_nonzero(F.equal(_bools(x), False), axis, keepdims), 0)


def ptp(x, axis=None, out=None, keepdims=False):
    N._no_out(out, "ptp")
    return F.subtract(N.amax(x, axis, keepdims=keepdims), N.amin(x, axis, keepdims=keepdims))


def _arg_extreme(x, axis, keepdims, largest: bool):
    if axis is None:
        flat = argmax(N.ravel(x), 0) if largest else argmin(N.ravel(x), 0)
        return F.reshape(flat, (1,) * x.ndim) if keepdims else flat
    axis = _axis(axis, x.ndim)
    x = F.stop_gradient(x)
    best = N.amax(x, axis, keepdims=True) if largest else N.amin(x, axis, keepdims=True)
    hit = F.equal(x, best)
    if x.dtype.kind == "f":
        hit = F.where(F.not_equal(x, x), True, hit)  # the first NaN, as NumPy
    n = x.shape[axis]
    index = np.arange(n, dtype=np.int64).reshape([n if a == axis else 1 for a in range(x.ndim)])
    first = N.amin(F.where(hit, index, n), axis, keepdims=keepdims)
    return first


def argmax(x, axis=None, out=None, keepdims=False):
    N._no_out(out, "argmax")
    return _arg_extreme(x, axis, keepdims, True)


def argmin(x, axis=None, out=None, keepdims=False):
    N._no_out(out, "argmin")
    return _arg_extreme(x, axis, keepdims, False)


def argsort(x, axis=-1, kind=None, order=None, stable=None):
    if order is not None:
        raise UnsupportedError("argsort(order=...) on structured arrays")
    if axis is None:
        x, axis = N.ravel(x), 0
    axis = _axis(axis, x.ndim)
    if x.dtype == np.bool_:
        x = F.astype(x, np.int32)  # False before True
    moved = N.moveaxis(F.stop_gradient(x), axis, -1)
    return N.moveaxis(E.argsort(moved), -1, axis)


def sort(x, axis=-1, kind=None, order=None, stable=None):
    if axis is None:
        x, axis = N.ravel(x), 0
    return N.take_along_axis(x, argsort(x, axis, kind, order), axis)


def _no_in_place_sort(self, *args, **kwargs):
    raise UnsupportedError("x.sort() sorts in place; traced arrays are immutable",
                           fix="use x = np.sort(x)")


def searchsorted(a, v, side="left", sorter=None):
    a = N._lift(a, [a, v])
    if sorter is not None:
        a = N.take(a, sorter)
    if len(F.shape_of(a)) != 1:
        raise ShapeMismatchError("np.searchsorted needs a 1-D sorted array")
    a, v = F.stop_gradient(a), F.stop_gradient(v)
    v_shape = F.shape_of(v)
    vv = F.reshape(v, v_shape + (1,)) if isinstance(v, Tracer) else np.reshape(v, v_shape + (1,))
    # the count of elements before v: O(len(a) · len(v)) comparisons, no data-dependent loop
    before = F.less(a, vv) if side == "left" else F.less_equal(a, vv)
    return N.sum(F.astype(before, np.int64), axis=-1)


def select(condlist, choicelist, default=0):
    if len(condlist) != len(choicelist):
        raise ShapeMismatchError("np.select: condlist and choicelist differ in length")
    if not condlist:
        raise ShapeMismatchError("np.select needs at least one condition")
    result = default
    for cond, choice in reversed(list(zip(condlist, choicelist))):
        result = F.where(cond, choice, result)
    return result


def _data_dependent(name: str, fix: str):
    def fn(*args, **kwargs):
        raise UnsupportedError(f"np.{name} has a data-dependent shape, which a static graph "
                               "cannot hold", fix=fix)

    return fn


_MASK_FIX = "use np.where(mask, x, 0) to select values, or count with np.sum(mask)"

FUNCTIONS = {
    np.cumsum: cumsum, np.cumprod: cumprod, np.diff: diff, np.average: average,
    np.count_nonzero: count_nonzero, np.any: any_, np.all: all_, np.ptp: ptp,
    np.argmax: argmax, np.argmin: argmin, np.argsort: argsort, np.sort: sort,
    np.searchsorted: searchsorted, np.select: select,
    np.nonzero: _data_dependent("nonzero", _MASK_FIX),
    np.argwhere: _data_dependent("argwhere", _MASK_FIX),
    np.flatnonzero: _data_dependent("flatnonzero", _MASK_FIX),
    np.extract: _data_dependent("extract", _MASK_FIX),
    np.unique: _data_dependent("unique", "compute it outside the compiled function"),
}
TRACER_METHODS = {
    "cumsum": cumsum, "cumprod": cumprod, "any": any_, "all": all_, "argmax": argmax,
    "argmin": argmin, "argsort": argsort, "ptp": ptp, "sort": _no_in_place_sort,
    "nonzero": _data_dependent("nonzero", _MASK_FIX),
}
UFUNCS = {}
