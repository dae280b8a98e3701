"""NumPy's elementwise maths on tracers beyond compiler/numpy_api.py's core: hyperbolic and
inverse trigonometric functions, logarithms in other bases, roundings, NaN tests, binary
maths (arctan2, hypot, logaddexp, remainders) and boolean logic.

Composed from the primitives with the numerically stable formula where the textbook
one loses accuracy (arcsinh for large |x|, sinh near 0 through expm1, hypot without
overflow); only arctan2 and fmod are primitives of their own (compiler/primitives_extra.py).
Roundings and NaN tests have no gradient, as in JAX. This module's `UFUNCS`, `FUNCTIONS` and
`TRACER_METHODS` join NumPy's dispatch in compiler/numpy_dispatch.py, which merges them.
"""

from __future__ import annotations

import numpy as np

from compiler import numpy_api as N
from compiler import primitives as F
from compiler import primitives_extra as E
from compiler.errors import UnsupportedError
from compiler.tracing import Tracer

_LN2 = float(np.log(2.0))
_LN10 = float(np.log(10.0))


def _float(x):
    """x as a float tracer (ints become float64, as NumPy's float ufuncs do)."""
    dtype = F.result_dtype(x)
    if dtype.kind != "f":
        return F.astype(x, np.float64)
    return x


def _abs_sign(x):
    return F.absolute(x), F.sign(x)


# -- hyperbolic and inverse trigonometric ----------------------------------------------------


def sinh(x):
    # sinh|x| = (u + u / (u + 1)) / 2 with u = expm1|x|: no cancellation near 0
    x = _float(x)
    ax, s = _abs_sign(x)
    u = F.expm1(ax)
    ratio = F.where(F.less(u, np.inf), F.divide(u, F.add(u, 1.0)), 1.0)
    return F.multiply(s, F.multiply(0.5, F.add(u, ratio)))


def cosh(x):
    e = F.exp(F.absolute(_float(x)))
    return F.add(F.multiply(0.5, e), F.divide(0.5, e))


def tan(x):
    x = _float(x)
    return F.divide(F.sin(x), F.cos(x))


def arctan2(y, x):
    return E.atan2(y, x)


def arctan(x):
    x = _float(x)
    return E.atan2(x, F.add(F.multiply(x, 0.0), 1.0))


def _sqrt_one_minus_square(x):
    return F.sqrt(F.multiply(F.subtract(1.0, x), F.add(1.0, x)))  # exact near |x| = 1


def arcsin(x):
    x = _float(x)
    return E.atan2(x, _sqrt_one_minus_square(x))


def arccos(x):
    x = _float(x)
    return E.atan2(_sqrt_one_minus_square(x), x)


def arcsinh(x):
    # asinh|x| = log1p(|x| + x² / (1 + sqrt(1 + x²))); for |x| > 1e8, log|x| + log 2
    x = _float(x)
    ax, s = _abs_sign(x)
    big = F.greater(ax, 1e8)
    small_x = F.where(big, 0.0, ax)
    sq = F.multiply(small_x, small_x)
    near = F.log1p(F.add(small_x, F.divide(sq, F.add(1.0, F.sqrt(F.add(1.0, sq))))))
    far = F.add(F.log(F.where(big, ax, 1.0)), _LN2)
    return F.multiply(s, F.where(big, far, near))


def arccosh(x):
    # acosh(x) = log1p(t + sqrt(2t + t²)), t = x - 1 (exact near 1); log x + log 2 for x > 1e8
    x = _float(x)
    big = F.greater(x, 1e8)
    t = F.subtract(F.where(big, 1.0, x), 1.0)
    near = F.log1p(F.add(t, F.sqrt(F.add(F.multiply(2.0, t), F.multiply(t, t)))))
    far = F.add(F.log(F.where(big, x, 1.0)), _LN2)
    return F.where(big, far, near)


def arctanh(x):
    x = _float(x)
    return F.multiply(0.5, F.log1p(F.divide(F.multiply(2.0, x), F.subtract(1.0, x))))


# -- logarithms, exponentials, angles ----------------------------------------------------------


def log2(x):
    return F.divide(F.log(_float(x)), _LN2)


def log10(x):
    return F.divide(F.log(_float(x)), _LN10)


def exp2(x):
    return F.exp(F.multiply(_float(x), _LN2))


def sinc(x):
    # sin(πx) / (πx), 1 at 0; the safe denominator keeps the gradient finite there
    x = _float(x)
    zero = F.equal(x, 0.0)
    px = F.multiply(np.pi, F.where(zero, 1.0, x))
    return F.where(zero, 1.0, F.divide(F.sin(px), px))


def deg2rad(x):
    return F.multiply(_float(x), np.pi / 180.0)


def rad2deg(x):
    return F.multiply(_float(x), 180.0 / np.pi)


# -- rounding and NaN tests (no gradient) ----------------------------------------------------


def round_(x, decimals=0, out=None):
    if out is not None:
        raise UnsupportedError("np.round(..., out=...)", fix="use the returned value")
    if x.dtype.kind != "f":
        return x
    if decimals == 0:
        return E.rint(x)
    scale = 10.0 ** decimals  # NumPy's own method: rint(x * 10^d) / 10^d
    return F.divide(E.rint(F.multiply(x, scale)), scale)


def isnan(x):
    if x.dtype.kind != "f":
        return N.full_like(x, False, np.bool_)
    return F.not_equal(x, x)


def isinf(x):
    if x.dtype.kind != "f":
        return isnan(x)
    return F.equal(F.absolute(x), np.inf)


def isfinite(x):
    if x.dtype.kind != "f":
        return logical_not(isnan(x))
    return F.less(F.absolute(x), np.inf)  # NaN < inf is False


def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    if x.dtype.kind != "f":
        return x
    info = np.finfo(x.dtype)
    posinf = info.max if posinf is None else posinf
    neginf = info.min if neginf is None else neginf
    x = F.where(F.not_equal(x, x), nan, x)
    x = F.where(F.equal(x, np.inf), posinf, x)
    return F.where(F.equal(x, -np.inf), neginf, x)


# -- binary maths --------------------------------------------------------------------------


def hypot(x, y):
    # max(|x|, |y|) sqrt(1 + r²), r = min / max: no overflow of x² + y²
    x, y = F.absolute(_float(x)), F.absolute(_float(y))
    big, small = F.maximum(x, y), F.minimum(x, y)
    safe = F.where(F.equal(big, 0.0), 1.0, big)
    r = F.divide(small, safe)
    result = F.multiply(big, F.sqrt(F.add(1.0, F.multiply(r, r))))
    return F.where(F.equal(big, np.inf), np.inf, result)


def logaddexp(x, y):
    # max + log1p(exp(-|x - y|)); equal arguments (also ±inf): x + log 2, as NumPy
    x, y = _float(x), _float(y)
    big = F.maximum(x, y)
    same = F.equal(x, y)
    d = F.where(same, 0.0, F.absolute(F.subtract(x, y)))
    return F.where(same, F.add(x, _LN2), F.add(big, F.log1p(F.exp(F.negative(d)))))


def logaddexp2(x, y):
    return F.divide(logaddexp(F.multiply(_float(x), _LN2), F.multiply(_float(y), _LN2)), _LN2)


def fmod(x, y):
    return E.fmod(x, y)


def remainder(x, y):
    # NumPy's npy_divmod: fmod, then moved into y's sign; a zero takes y's sign
    r = E.fmod(x, y)
    wrong_sign = F.where(F.not_equal(r, 0), F.not_equal(F.less(y, 0), F.less(r, 0)), False)
    return F.where(wrong_sign, F.add(r, y), r)


def floor_divide(x, y):
    dtype = F.result_dtype(x, y)
    if dtype.kind == "f":
        # (x - remainder) / y is exact-ish; its floor corrects the rounding (NumPy's method)
        r = E.fmod(x, y)
        div = F.divide(F.subtract(x, r), y)
        wrong_sign = F.where(F.not_equal(r, 0), F.not_equal(F.less(y, 0), F.less(r, 0)), False)
        div = F.where(wrong_sign, F.subtract(div, 1.0), div)
        floored = E.floor(div)
        floored = F.where(F.greater(F.subtract(div, floored), 0.5), F.add(floored, 1.0), floored)
        nonzero = F.not_equal(div, 0)
        result = F.where(nonzero, floored, F.multiply(0.0, F.divide(x, y)))
        return F.stop_gradient(F.where(F.equal(y, 0), F.divide(x, y), result))
    # integers: x - remainder is a multiple of y, so the float64 quotient is exact (|x| < 2**53)
    if dtype == np.bool_:
        raise UnsupportedError("floor division of booleans", fix="cast to int first")
    r = remainder(x, y)
    q = F.divide(F.astype(F.subtract(x, r), np.float64), F.astype(y, np.float64))
    y_zero = F.equal(y, 0)
    return F.astype(F.where(y_zero, 0.0, q), dtype)


def true_divide(x, y):
    return F.divide(x, y)


def _ignoring_nan(extremum):
    def fn(x, y):
        m = extremum(x, y)
        if F.result_dtype(x, y).kind != "f":
            return m
        m = F.where(F.not_equal(y, y), x, m)  # a NaN in one operand: the other one
        return F.where(F.not_equal(x, x), y, m)

    return fn


fmax = _ignoring_nan(F.maximum)
fmin = _ignoring_nan(F.minimum)


# -- boolean logic -------------------------------------------------------------------------


def _as_bool(x):
    if isinstance(x, Tracer):
        return x if x.dtype == np.bool_ else F.not_equal(x, 0)
    return np.asarray(x).astype(bool)


def logical_and(x, y):
    return F.where(_as_bool(x), _as_bool(y), False)


def logical_or(x, y):
    return F.where(_as_bool(x), True, _as_bool(y))


def logical_xor(x, y):
    return F.not_equal(_as_bool(x), _as_bool(y))


def logical_not(x):
    return F.equal(_as_bool(x), False)


def _bitwise(name: str, logical):
    def fn(x, y=None):
        operands = [x] if y is None else [x, y]
        for a in operands:
            dtype = a.dtype if isinstance(a, Tracer) else np.asarray(a).dtype
            if dtype != np.bool_ and not (not isinstance(a, Tracer) and isinstance(a, bool)):
                raise UnsupportedError(
                    f"{name} on a {dtype} operand: bitwise integer operations are not "
                    "supported on traced values (only on boolean arrays)",
                    fix="compare first to get booleans, e.g. (x > 0) & (x < 1), or use "
                    "np.logical_and / np.logical_or / np.logical_not",
                )
        return logical(*operands)

    fn.__name__ = name
    return fn


bitwise_and = _bitwise("bitwise_and (&)", logical_and)
bitwise_or = _bitwise("bitwise_or (|)", logical_or)
bitwise_xor = _bitwise("bitwise_xor (^)", logical_xor)
invert = _bitwise("invert (~)", logical_not)


UFUNCS = {
    np.sinh: sinh, np.cosh: cosh, np.tan: tan, np.arcsin: arcsin, np.arccos: arccos,
    np.arctan: arctan, np.arcsinh: arcsinh, np.arccosh: arccosh, np.arctanh: arctanh,
    np.log2: log2, np.log10: log10, np.exp2: exp2, np.deg2rad: deg2rad, np.rad2deg: rad2deg,
    np.degrees: rad2deg, np.radians: deg2rad, np.fabs: F.absolute, np.floor: E.floor,
    np.ceil: E.ceil, np.rint: E.rint, np.trunc: E.trunc, np.isfinite: isfinite,
    np.isnan: isnan, np.isinf: isinf, np.arctan2: arctan2, np.hypot: hypot,
    np.logaddexp: logaddexp, np.logaddexp2: logaddexp2, np.remainder: remainder,
    np.fmod: fmod, np.floor_divide: floor_divide, np.true_divide: true_divide,
    np.fmax: fmax, np.fmin: fmin, np.logical_and: logical_and, np.logical_or: logical_or,
    np.logical_xor: logical_xor, np.logical_not: logical_not, np.bitwise_and: bitwise_and,
    np.bitwise_or: bitwise_or, np.bitwise_xor: bitwise_xor, np.invert: invert,
}
FUNCTIONS = {
    np.sinc: sinc, np.round: round_, np.around: round_, np.fix: E.trunc,
    np.nan_to_num: nan_to_num,
}
TRACER_METHODS = {
    "round": round_, "__round__": lambda x, ndigits=None: round_(x, ndigits or 0),
    "__and__": bitwise_and, "__rand__": lambda x, y: bitwise_and(y, x),
    "__or__": bitwise_or, "__ror__": lambda x, y: bitwise_or(y, x),
    "__xor__": bitwise_xor, "__rxor__": lambda x, y: bitwise_xor(y, x),
    "__invert__": invert,
    "__mod__": remainder, "__rmod__": lambda x, y: remainder(y, x),
    "__floordiv__": floor_divide, "__rfloordiv__": lambda x, y: floor_divide(y, x),
}
