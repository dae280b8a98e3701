"""Frontend functions for the library primitives (ir/ops.py's LIBRARY group: ATAN2, FMOD,
ARGSORT, SOLVE, SLOGDET, CHOLESKY), and the exact integer-valued roundings (`trunc`, `floor`,
`ceil`, `rint`) composed from casts that both the NumPy layer and the VJP rules use.

Like compiler/primitives.py: each function applies NumPy's promotion, broadcasts explicitly,
emits one primitive, and runs eagerly on NumPy values when no tracer is among its operands.
"""

from __future__ import annotations

import numpy as np

from compiler import primitives as F
from compiler.errors import ShapeMismatchError
from compiler.tracing import Tracer
from ir.ops import Op

# Floats at least this large (in magnitude) are integers already, and casts to int64 are exact
# below it: so trunc(x) = x there, and cast(cast(x, i64), dtype) below.
_INTEGRAL = 2.0**52


def atan2(y, x):
    """np.arctan2(y, x) (primitive Op.ATAN2)."""
    return F._elementwise(Op.ATAN2, np.arctan2, [y, x], float_only=True)


def fmod(x, y):
    """np.fmod(x, y): C's remainder, with x's sign (primitive Op.FMOD); 0 for integer y == 0,
    as NumPy."""
    return F._elementwise(Op.FMOD, np.fmod, [x, y])


def trunc(x):
    """Round towards zero, exactly, with no gradient (casts through int64 below 2**52)."""
    if not isinstance(x, Tracer):
        return np.trunc(x)
    if x.dtype.kind != "f":
        return x
    small = F.less(F.absolute(x), _INTEGRAL)  # NaN and inf: False, so they pass unchanged
    safe = F.where(small, x, 0.0)
    whole = F.astype(F.astype(safe, np.int64), x.dtype)
    return F.stop_gradient(F.where(small, whole, x))


def floor(x):
    """Round down, exactly, with no gradient."""
    if not isinstance(x, Tracer):
        return np.floor(x)
    t = trunc(x)
    return F.stop_gradient(F.where(F.greater(t, x), F.subtract(t, 1.0), t))


def ceil(x):
    """Round up, exactly, with no gradient."""
    if not isinstance(x, Tracer):
        return np.ceil(x)
    t = trunc(x)
    return F.stop_gradient(F.where(F.less(t, x), F.add(t, 1.0), t))


def rint(x):
    """Round to the nearest integer, halves to even (np.rint), exactly, with no gradient."""
    if not isinstance(x, Tracer):
        return np.rint(x)
    if x.dtype.kind != "f":
        return x
    t = trunc(x)
    frac = F.subtract(x, t)  # exact: |frac| < 1 and t, x share their exponent range
    half = F.absolute(frac)
    odd = F.not_equal(F.subtract(t, F.multiply(2.0, trunc(F.multiply(t, 0.5)))), 0.0)
    away = F.where(F.equal(half, 0.5), odd, F.greater(half, 0.5))
    return F.stop_gradient(F.where(away, F.add(t, F.sign(frac)), t))


def argsort(x):
    """Stable argsort along the last axis (primitive Op.ARGSORT), int64; no gradient."""
    if not isinstance(x, Tracer):
        return np.argsort(x, axis=-1, kind="stable").astype(np.int64)
    return F.apply(Op.ARGSORT, [x])


def _float_matrices(*xs):
    dtype = F.result_dtype(*xs)
    if dtype.kind != "f":
        dtype = np.dtype(np.float64)  # as NumPy: linalg of integers is float64
    return [F.astype(x, dtype) for x in xs]


def _check_square(a, what: str) -> None:
    shape = F.shape_of(a)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ShapeMismatchError(f"np.linalg.{what} needs square (..., n, n) matrices, got "
                                 f"shape {tuple(shape)}")


def solve(a, b):
    """np.linalg.solve(a, b) with NumPy 2's rule: b is (..., n, k) when it has a's rank, else
    (..., n) (a vector per matrix); batch dims broadcast (primitive Op.SOLVE)."""
    _check_square(a, "solve")
    a, b = _float_matrices(a, b)
    sa, sb = F.shape_of(a), F.shape_of(b)
    vector = len(sb) == 1 or (len(sb) == len(sa) - 1 and sb == sa[:-1])
    if vector:
        b = F.reshape(b, sb + (1,))
        sb = sb + (1,)
    if sb[-2] != sa[-1]:
        raise ShapeMismatchError(f"np.linalg.solve: a is {tuple(sa)} but b has {sb[-2]} rows")
    batch = F.broadcast_shapes(np.empty(sa[:-2]), np.empty(sb[:-2]), what="solve batch dims")
    a = F.broadcast_to(a, batch + sa[-2:])
    b = F.broadcast_to(b, batch + sb[-2:])
    if F.trace_of([a, b]) is None:
        x = np.linalg.solve(a, b)
    else:
        x = F.apply(Op.SOLVE, [a, b])
    return F.reshape(x, F.shape_of(x)[:-1]) if vector else x


def slogdet(a):
    """(sign, log|det|) of each (..., n, n) matrix (primitive Op.SLOGDET)."""
    _check_square(a, "slogdet")
    (a,) = _float_matrices(a)
    both = np.stack(np.linalg.slogdet(a), -1) if not isinstance(a, Tracer) else \
        F.apply(Op.SLOGDET, [a])
    n = len(F.shape_of(both))
    sign = F.reshape(F.slice_(both, (0,) * n, F.shape_of(both)[:-1] + (1,), (1,) * n),
                     F.shape_of(both)[:-1])
    logabsdet = F.reshape(F.slice_(both, (0,) * (n - 1) + (1,), F.shape_of(both), (1,) * n),
                          F.shape_of(both)[:-1])
    return sign, logabsdet


def cholesky(a, upper: bool = False):
    """np.linalg.cholesky: the lower factor L of a = L Lᵀ from a's lower triangle (primitive
    Op.CHOLESKY); `upper=True` gives U = Lᵀ from a's upper triangle, as NumPy 2."""
    _check_square(a, "cholesky")
    (a,) = _float_matrices(a)
    n = len(F.shape_of(a))
    swap = tuple(range(n - 2)) + (n - 1, n - 2)
    if upper:  # U of a is Lᵀ of aᵀ (aᵀ's lower triangle is a's upper one)
        a = F.transpose(a, swap)
    low = np.linalg.cholesky(a) if not isinstance(a, Tracer) else F.apply(Op.CHOLESKY, [a])
    return F.transpose(low, swap) if upper else low
