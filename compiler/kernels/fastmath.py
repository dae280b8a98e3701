"""Vectorisable float32 transcendental functions for Numba-compiled loops.

Numba lowers ``np.exp``/``np.tanh``/``np.log`` on float32 to scalar libm calls, which
LLVM cannot vectorise (this llvmlite has no SVML).  The functions here are written
in plain float32 arithmetic plus two bit-cast intrinsics, so after LLVM inlines them
into a kernel loop the loop vectorises (8 x float32 per AVX2 register).

Usage from generated kernels::

    from compiler.kernels.fastmath import tanh_f32          # or: FAST_F32["tanh"]

    @numba.njit(cache=True, error_model="numpy")    # fastmath flag: either value works
    def kernel(x, out):
        for i in range(x.size):
            out[i] = tanh_f32(x[i])                   # pass float32 values

* The functions are ordinary ``@njit`` functions (NOT ``inline="always"``; sin/cos
  are thin inline="always" wrappers around such functions): Numba links them into
  the caller and LLVM inlines them, which vectorises just as well and keeps *their
  own* floating-point flags.  They are compiled with
  ``fastmath={"contract"}`` only (FMA contraction), so a caller compiled with
  ``fastmath=True`` cannot break their NaN/inf handling or the rounding tricks.
* Arguments are converted to float32 first; float64 arguments work but cost two
  conversions (and a float64 loop may vectorise at half width).  Results are float32.
* Vectorisation of the *caller's* loop is the caller's business: it needs
  contiguous arrays, no Python-error-model checks in the loop (use
  ``error_model="numpy"`` if the loop divides) and no other non-inlinable calls.

Branch-free design: every data-dependent choice is an ``a if cond else b`` on
scalars, which LLVM turns into a vector ``select``/``blendvps``.  2**n is built as
the float with bit pattern ``(n + 127) << 23``; ``round(t)`` is ``(t + 1.5*2**23) -
1.5*2**23`` (whose bit pattern also holds the integer, so no float->int conversion
is needed and NaN inputs stay well defined).

Method and measured accuracy (max error over ~4.7M inputs: every 1021st float32 bit
pattern of both signs, i.e. all magnitudes from denormals to inf, plus a dense
sweep of [-20, 20]; the test uses every 2039th pattern.  Reference: float64 NumPy.
"ulp" is relative to the spacing of the correctly rounded float32 result, so near
zero it is also an absolute bound in units of 2**-149; "abs" is
max |err| / max(|ref|, 1) on [-20, 20])::

    function     max ulp   abs     method
    exp_f32      0.99      8.0e-8  Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2,
                                   exp(r) = 1 + r + r^2 P5(r) (Cephes minimax), scaled
                                   by 2**(n//2) * 2**(n - n//2): gradual underflow
                                   (denormal results are correct, not flushed) and
                                   overflow to +inf for x > 88.72; exp(-inf) = 0.
    expm1_f32    1.39      1.2e-7  same reduction; expm1 = 2**n * (expm1(r) + (1 -
                                   2**-n)) where 1 - 2**-n is exact: relative-accurate
                                   near 0 (expm1(1e-20) = 1e-20), -1 below -17.4.
    log_f32      0.77      7.8e-8  x = 2**e * m, m in [sqrt(.5), sqrt(2)) by integer
                                   bit ops, log(m) = f - f^2/2 + f^3 P9(f) (Cephes),
                                   + e ln2 in two parts.  Denormal x: pre-scaled by
                                   2**23 (exact).  log(0) = -inf, log(x<0) = nan,
                                   log(inf) = inf.
    log1p_f32    1.44      1.2e-7  u = 1 + x, log(u) (as above) + (x - (u - 1)) / u,
                                   the first-order correction for the rounding of
                                   1 + x: relative-accurate near 0.  log1p(-1) = -inf,
                                   x < -1 -> nan.
    tanh_f32     2.23      8.8e-8  e = expm1(2|x|), tanh = sign(x) * e / (e + 2) with
                                   |x| clamped to 10 (tanh(|x| >= 9.01) == 1.0 exactly);
                                   relative-accurate near 0, keeps the sign of -0.0.
    sigmoid_f32  2.78      8.9e-8  e = exp(-|x|), s = 1 / (1 + e); x >= 0 -> s,
                                   x < 0 -> e * s.  Never overflows: sigmoid(+inf) = 1,
                                   sigmoid(-inf) = 0, sigmoid(-100) = 3.8e-44 (denormal, correct).
    sin_f32      0.50      3.0e-8  float64 internally: |x| < 2**20: n = round(x 2/pi),
    cos_f32      0.50      3.0e-8  r = x - n pi/2 (3-part Cody-Waite); |x| >= 2**20:
                                   exact Payne-Hanek with a 256 x 4 table of 2/pi bits
                                   (double-double), both computed and selected; then
                                   Taylor polynomials of sin/cos in float64 (error
                                   < 1e-10) and a quadrant select.  Correct over the
                                   whole float32 range (sin(1e38) etc.); inf -> nan.
                                   They run 4 wide (float64) with a table gather:
                                   slower than NumPy's SIMD np.sin, but about 1.7-2.4x
                                   faster than the libm call in an njit loop.  The
                                   entry points are inline="always" (too big for
                                   LLVM's inliner otherwise) but contain only calls,
                                   so caller fastmath flags still do not leak in.

All functions map nan -> nan and +-inf to the right limits.  Known nits: expm1(-0.0)
and log1p(-0.0) return +0.0.  The documented bounds (with a little slack) are in
``MAX_ULP``/``MAX_ABS`` and enforced by tests/compiler/test_fastmath.py.

Speed (4,194,304 float32 values, median ms, 2-core AMD EPYC with AVX2/FMA, from
benchmarks/fastmath_micro.py; the machine was shared with other jobs (load ~4), so
the two columns are two runs and only ratios within a run mean much)::

    copy loop (memory floor)          2.2    5.6
    NumPy np.tanh / np.exp / np.sin   19 / 13 / 24     31 / 23 / 8
    njit loop np.tanh (libm)          124    212
    njit loop np.exp  (libm)          23     21
    njit loop np.sin  (libm)          53     44
    njit loop tanh_f32                5.5    5.1
    njit loop exp_f32                 3.2    3.0
    njit loop log_f32                 6.5    10.4
    njit loop sigmoid_f32             4.5    4.1
    njit loop tanh_f32(a*x+b)*0.5     6.3    5.1
    njit loop sin_f32                 57     25
    prange np.tanh (libm)             309    204
    prange tanh_f32 (2 threads)       14     12   (memory-bound/loaded: no gain)

The table ``FAST_F32`` at the bottom maps op names to functions for the code
generator.  float64 is deliberately not covered: use libm (``math.exp`` ...).
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir as llir
from numba.core import types
from numba.core.extending import intrinsic

# ---------------------------------------------------------------------------
# Bit-level helpers (LLVM bitcasts; free, and they vectorise).
# ---------------------------------------------------------------------------


@intrinsic
def _as_i32(typingctx, x):
    """Reinterpret the bits of a float32 as an int32."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _as_f32(typingctx, i):
    """Reinterpret the low 32 bits of an integer as a float32."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = args[0]
        w = v.type.width
        if w > 32:
            v = builder.trunc(v, llir.IntType(32))
        elif w < 32:
            v = builder.zext(v, llir.IntType(32))
        return builder.bitcast(v, llir.FloatType())

    return types.float32(i), codegen


_F32 = np.float32
_JIT = dict(nogil=True, error_model="numpy", cache=True, fastmath={"contract"})

LOG2E = _F32(1.44269504088896341)
LN2_HI = _F32(0.693359375)          # exact, 9 significant bits
LN2_LO = _F32(-2.12194440e-4)       # ln2 - LN2_HI
MAGIC = _F32(12582912.0)            # 1.5 * 2**23: x + MAGIC rounds x to an integer
MAGIC_BITS = 0x4B400000
ONE = _F32(1.0)
TWO = _F32(2.0)
HALF = _F32(0.5)
ZERO = _F32(0.0)
INF = _F32(np.inf)
NAN = _F32(np.nan)

# exp(r) = 1 + r + r^2 * P(r) on |r| <= ln2/2 (Cephes expf minimax coefficients)
EP0 = _F32(1.9875691500e-4)
EP1 = _F32(1.3981999507e-3)
EP2 = _F32(8.3334519073e-3)
EP3 = _F32(4.1665795894e-2)
EP4 = _F32(1.6666665459e-1)
EP5 = _F32(5.0000001201e-1)

EXP_HI = _F32(100.0)    # exp overflows to +inf well before this
EXP_LO = _F32(-110.0)   # exp underflows to 0 well before this
EXPM1_LO = _F32(-30.0)  # expm1(x) == -1 in float32 for x < -17.4


@numba.njit(inline="never", **_JIT)
def _expm1_reduced(r):
    """expm1(r) for |r| <= ln2/2: r + r^2*P(r), relatively accurate near 0."""
    p = EP0 * r + EP1
    p = p * r + EP2
    p = p * r + EP3
    p = p * r + EP4
    p = p * r + EP5
    return r * r * p + r


@numba.njit(**_JIT)
def exp_f32(x):
    """exp(x) for float32 x.  Branch-free; see module docstring for accuracy."""
    x = _F32(x)
    xc = EXP_HI if x > EXP_HI else x
    xc = EXP_LO if xc < EXP_LO else xc          # NaN passes both clamps unchanged
    k = xc * LOG2E + MAGIC                      # round(x*log2e) held in the low mantissa bits
    n = np.int32(_as_i32(k) - MAGIC_BITS)
    nf = k - MAGIC
    r = (xc - nf * LN2_HI) - nf * LN2_LO        # Cody-Waite reduction, |r| <= ln2/2
    p = ONE + _expm1_reduced(r)
    # 2**n = 2**n1 * 2**n2 with both halves normal: gives correct denormals and overflow.
    n1 = n >> 1
    n2 = n - n1
    s1 = _as_f32(((n1 + 127) & 0xFF) << 23)
    s2 = _as_f32(((n2 + 127) & 0xFF) << 23)
    return (p * s1) * s2


@numba.njit(**_JIT)
def expm1_f32(x):
    """exp(x) - 1 for float32 x, relatively accurate near 0."""
    x = _F32(x)
    xc = EXP_HI if x > EXP_HI else x
    xc = EXPM1_LO if xc < EXPM1_LO else xc
    k = xc * LOG2E + MAGIC
    n = np.int32(_as_i32(k) - MAGIC_BITS)
    nf = k - MAGIC
    r = (xc - nf * LN2_HI) - nf * LN2_LO
    q = _expm1_reduced(r)
    # expm1(x) = 2**n * (q + 1 - 2**-n); 1 - 2**-n is exact for |n| <= 24
    nm = n if n < 60 else 60
    c = ONE - _as_f32(((127 - nm) & 0xFF) << 23)
    n1 = n >> 1
    n2 = n - n1
    s1 = _as_f32(((n1 + 127) & 0xFF) << 23)
    s2 = _as_f32(((n2 + 127) & 0xFF) << 23)
    return ((q + c) * s1) * s2


# log(1+f) = f - f^2/2 + f^3 * P(f) for f in [sqrt(.5)-1, sqrt(2)-1] (Cephes logf)
LP0 = _F32(7.0376836292e-2)
LP1 = _F32(-1.1514610310e-1)
LP2 = _F32(1.1676998740e-1)
LP3 = _F32(-1.2420140846e-1)
LP4 = _F32(1.4249322787e-1)
LP5 = _F32(-1.6668057665e-1)
LP6 = _F32(2.0000714765e-1)
LP7 = _F32(-2.4999993993e-1)
LP8 = _F32(3.3333331174e-1)
FLT_MIN = _F32(1.17549435e-38)
TWO23 = _F32(8388608.0)


@numba.njit(inline="never", **_JIT)
def _log_core(ix):
    """log of the positive normal float32 with bit pattern ix (int32)."""
    # Normalise the mantissa m to [sqrt(.5), sqrt(2)) and the exponent e accordingly.
    ix = ix + (0x3F800000 - 0x3F3504F3)
    e = (ix >> 23) - 127
    m = _as_f32((ix & 0x007FFFFF) + 0x3F3504F3)
    f = m - ONE
    ef = _F32(e)
    z = f * f
    p = LP0 * f + LP1
    p = p * f + LP2
    p = p * f + LP3
    p = p * f + LP4
    p = p * f + LP5
    p = p * f + LP6
    p = p * f + LP7
    p = p * f + LP8
    y = f * z * p
    y = y + ef * LN2_LO
    y = y - HALF * z
    return (f + y) + ef * LN2_HI


@numba.njit(**_JIT)
def log_f32(x):
    """Natural log of float32 x (denormal inputs handled exactly)."""
    x = _F32(x)
    tiny = x < FLT_MIN
    xs = x * TWO23 if tiny else x
    ix = np.int32(_as_i32(xs) - (23 << 23)) if tiny else _as_i32(xs)
    y = _log_core(ix)
    special = x if x == x else x                       # +inf -> inf, nan -> nan
    special = -INF if x == ZERO else special
    special = NAN if x < ZERO else special
    ok = (x > ZERO) & (x < INF)
    return y if ok else special


@numba.njit(**_JIT)
def log1p_f32(x):
    """log(1 + x) for float32 x, relatively accurate near 0."""
    x = _F32(x)
    u = ONE + x
    um1 = u - ONE
    # Rounding error of 1 + x (exact for the ranges where it matters), corrected to 1st order.
    c = (x - um1) / u
    uu = u if u > ZERO else ONE
    y = _log_core(_as_i32(uu)) + c
    special = x if x == x else x                       # +inf -> inf, nan -> nan
    special = -INF if x == -ONE else special
    special = NAN if x < -ONE else special
    ok = (x > -ONE) & (x < INF)
    return y if ok else special


TANH_CLAMP = _F32(10.0)   # tanh(10) rounds to 1.0f
SIGN_MASK = -0x80000000


@numba.njit(**_JIT)
def tanh_f32(x):
    """tanh(x) = sign(x) * e / (e + 2) with e = expm1(2|x|)."""
    x = _F32(x)
    ax = abs(x)
    ax = TANH_CLAMP if ax > TANH_CLAMP else ax       # NaN passes unchanged
    e = expm1_f32(ax + ax)
    t = e / (e + TWO)
    return _as_f32(_as_i32(t) | (_as_i32(x) & SIGN_MASK))


@numba.njit(**_JIT)
def sigmoid_f32(x):
    """1 / (1 + exp(-x)), computed via e = exp(-|x|) so neither tail overflows."""
    x = _F32(x)
    e = exp_f32(-abs(x))
    s = ONE / (ONE + e)
    return s if x >= ZERO else e * s if x < ZERO else x + x   # x + x: nan in -> nan out



# ---------------------------------------------------------------------------
# sin / cos: float32 in, argument reduction and polynomials in float64.
# ---------------------------------------------------------------------------


def _two_over_pi_fixed(bits):
    """floor(2/pi * 2**bits), computed exactly with integers (Machin's formula)."""
    guard = 64
    one = 1 << (bits + guard)

    def arctan_inv(m):  # arctan(1/m) * one
        total, term, k, sign = 0, one // m, 1, 1
        m2 = m * m
        while term:
            total += sign * (term // k)
            term //= m2
            k += 2
            sign = -sign
        return total

    pi = 4 * (4 * arctan_inv(5) - arctan_inv(239))   # pi * one (error < 2**-40 * one)
    return ((2 * one * one) // pi) >> guard


def _make_reduction_table():
    """_RED[be] = (2**(be-150) * 2/pi) mod 4, split into four 28-bit float64 chunks.

    A finite float32 with biased exponent be >= 1 is M * 2**(be-150) with the 24-bit
    integer M, so x * 2/pi mod 4 == M * sum(_RED[be]) mod 4, and every M * chunk is
    exact in float64 (24 + 28 bits).  The chunks hold 2/pi mod 4 down to 2**-110.
    """
    frac_bits = 110
    extra = 160
    tpi = _two_over_pi_fixed(frac_bits + extra)      # 2/pi * 2**(frac_bits + extra)
    table = np.zeros((256, 4), dtype=np.float64)
    for be in range(256):
        shift = be - 150
        t = tpi << shift if shift >= 0 else tpi >> -shift
        t >>= extra                                   # 2/pi * 2**shift * 2**frac_bits
        t &= (1 << (frac_bits + 2)) - 1               # mod 4
        for k in range(4):
            lo_bit = frac_bits + 2 - 28 * (k + 1)
            chunk = (t >> lo_bit) & ((1 << 28) - 1)
            table[be, k] = float(chunk) * 2.0 ** (lo_bit - frac_bits)
    table.setflags(write=False)
    return table


_RED = _make_reduction_table()

INV_PIO2 = 0.63661977236758134308
PIO2_1 = 1.57079632673412561417e+00      # first 33 bits of pi/2
PIO2_1T = 6.07710050650619224932e-11     # pi/2 - PIO2_1
PIO2_HI = 1.5707963267948966
PIO2_LO = 6.123233995736766e-17
MAGIC64 = 6755399441055744.0             # 1.5 * 2**52
SMALL_LIMIT = _F32(1048576.0)            # |x| < 2**20: Cody-Waite in float64 suffices


@numba.njit(inline="never", **_JIT)
def _reduce_pio2(x):
    """(r, q) with x = (4k + q) * pi/2 + r, |r| <= ~pi/4, r float64, q in {0,1,2,3}
    (as float64).  |x| < 2**20: 3-constant Cody-Waite in float64; otherwise an exact
    table-driven Payne-Hanek reduction in double-double.  Both are computed and the
    result selected, so there is no branch."""
    xd = np.float64(x)
    k = xd * INV_PIO2 + MAGIC64
    nf = k - MAGIC64
    r_small = (xd - nf * PIO2_1) - nf * PIO2_1T
    ix = _as_i32(x) & 0x7FFFFFFF
    be = ix >> 23
    m = np.float64((ix & 0x007FFFFF) | 0x00800000)
    a = m * _RED[be, 0]
    a = a - 4.0 * np.floor(a * 0.25)
    b = m * _RED[be, 1]
    n = np.floor((a + b) + 0.5)
    h0 = a - n
    hi = h0 + b                                   # TwoSum(h0, b)
    bb = hi - h0
    lo = ((h0 - (hi - bb)) + (b - bb)) + (m * _RED[be, 2] + m * _RED[be, 3])
    r_large = hi * PIO2_HI + (hi * PIO2_LO + lo * PIO2_HI)
    neg = x < ZERO
    r_large = -r_large if neg else r_large
    n = -n if neg else n
    small = abs(x) < SMALL_LIMIT
    r = r_small if small else r_large
    n = nf if small else n
    q = n - 4.0 * np.floor(n * 0.25)
    return r, q


@numba.njit(inline="never", **_JIT)
def _sin_poly(r):
    """sin(r) for |r| <= pi/4 in float64 (Taylor to r**11: rel. error < 1e-10)."""
    z = r * r
    p = z * (-1.0 / 39916800.0) + 1.0 / 362880.0
    p = p * z - 1.0 / 5040.0
    p = p * z + 1.0 / 120.0
    p = p * z - 1.0 / 6.0
    return r * (1.0 + z * p)


@numba.njit(inline="never", **_JIT)
def _cos_poly(r):
    """cos(r) for |r| <= pi/4 in float64 (Taylor to r**12: error < 1e-11)."""
    z = r * r
    p = z * (1.0 / 479001600.0) - 1.0 / 3628800.0
    p = p * z + 1.0 / 40320.0
    p = p * z - 1.0 / 720.0
    p = p * z + 1.0 / 24.0
    p = p * z - 0.5
    return 1.0 + z * p


@numba.njit(inline="never", **_JIT)
def _sin_finish(r, q, x):
    s = _sin_poly(r)
    c = _cos_poly(r)
    v = s if q == 0.0 else c
    v = -s if q == 2.0 else v
    v = -c if q == 3.0 else v
    res = np.float32(v)
    return res if abs(x) < INF else x - x        # inf, nan -> nan


@numba.njit(inline="never", **_JIT)
def _cos_finish(r, q, x):
    s = _sin_poly(r)
    c = _cos_poly(r)
    v = c if q == 0.0 else -s
    v = -c if q == 2.0 else v
    v = s if q == 3.0 else v
    res = np.float32(v)
    return res if abs(x) < INF else x - x


# sin/cos are too large for LLVM's inliner as one function, so the entry points are
# inlined at Numba level (inline="always") and consist only of calls to helpers that
# LLVM inlines one by one.  They contain no floating-point arithmetic themselves, so
# the caller's fastmath flags still cannot affect the computation.
@numba.njit(inline="always", **_JIT)
def sin_f32(x):
    """sin(x) for float32 x, correctly reduced over the whole float32 range."""
    x32 = _F32(x)
    r, q = _reduce_pio2(x32)
    return _sin_finish(r, q, x32)


@numba.njit(inline="always", **_JIT)
def cos_f32(x):
    """cos(x) for float32 x, correctly reduced over the whole float32 range."""
    x32 = _F32(x)
    r, q = _reduce_pio2(x32)
    return _cos_finish(r, q, x32)


FAST_F32 = {
    "exp": exp_f32,
    "expm1": expm1_f32,
    "log": log_f32,
    "log1p": log1p_f32,
    "tanh": tanh_f32,
    "sigmoid": sigmoid_f32,
    "sin": sin_f32,
    "cos": cos_f32,
}

# Documented bounds checked by tests/compiler/test_fastmath.py.
MAX_ULP = {"exp": 1.5, "expm1": 2.0, "log": 1.5, "log1p": 2.0, "tanh": 3.0, "sigmoid": 3.0,
           "sin": 1.0, "cos": 1.0}
MAX_ABS = {"exp": 2e-7, "expm1": 2e-7, "log": 2e-7, "log1p": 2e-7, "tanh": 2e-7, "sigmoid": 2e-7,
           "sin": 2e-7, "cos": 2e-7}
