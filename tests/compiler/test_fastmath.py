"""Accuracy, special-value and vectorisation tests for compiler.kernels.fastmath.

Every function is exercised through a small ``@njit`` loop, i.e. the way generated
kernels call it, and compared against a float64 NumPy reference.
"""
from __future__ import annotations

import re

import numba
import numpy as np
import pytest

from compiler.kernels import fastmath as fm

F32 = np.float32


def _reference(name, x64):
    with np.errstate(all="ignore"):
        if name == "sigmoid":
            return 1.0 / (1.0 + np.exp(-x64))
        return getattr(np, name)(x64)


_LOOPS = {}


def _loop(name, fastmath=False):
    """A compiled loop ``out[i] = f(x[i])`` (cached per function/flag)."""
    key = (name, fastmath)
    if key not in _LOOPS:
        f = fm.FAST_F32[name]

        @numba.njit(fastmath=fastmath, error_model="numpy")
        def loop(x, out):
            for i in range(x.size):
                out[i] = f(x[i])

        _LOOPS[key] = loop
    return _LOOPS[key]


def _apply(name, x, fastmath=False):
    x = np.ascontiguousarray(x, dtype=F32)
    out = np.empty_like(x)
    _loop(name, fastmath)(x, out)
    return out


def _sweep():
    """~2.5M float32 inputs: every 2039th bit pattern of each sign (all magnitudes
    from denormals to inf, log-uniformly) plus a dense linear sweep of [-20, 20]."""
    bits = np.arange(0, 0x7F800001, 2039, dtype=np.uint32)
    bits[-1] = 0x7F800000  # +inf
    pos = bits.view(F32)
    lin = np.linspace(-20, 20, 400_001, dtype=F32)
    extra = np.array([F32(np.finfo(F32).max), F32(np.finfo(F32).tiny),
                      F32(np.finfo(F32).smallest_subnormal)], dtype=F32)
    return np.concatenate([pos, -pos, lin, extra, -extra])


SWEEP = _sweep()


def ulp_error(got, ref64):
    """|got - ref| in units of the float32 spacing at the correctly rounded result.

    The spacing at denormal results is 2**-149, so this is also an absolute-error
    check near zero.  Non-finite/NaN mismatches are reported as inf error.
    """
    got = got.astype(np.float64)
    with np.errstate(all="ignore"):
        ref32 = ref64.astype(F32)
        spacing = np.spacing(np.abs(ref32)).astype(np.float64)
        # results that round to +-inf: measure against the spacing at FLT_MAX
        spacing = np.where(np.isinf(ref32), float(np.spacing(np.finfo(F32).max)), spacing)
        err = np.abs(got - ref64) / spacing
    both_nan = np.isnan(got) & np.isnan(ref64)
    same_inf = np.isinf(got) & (got == ref32)
    err = np.where(both_nan | same_inf, 0.0, err)
    err = np.where(np.isnan(got) != np.isnan(ref64), np.inf, err)
    return err


NAMES = sorted(fm.FAST_F32)


@pytest.mark.parametrize("name", NAMES)
def test_accuracy_whole_range(name):
    got = _apply(name, SWEEP)
    ref = _reference(name, SWEEP.astype(np.float64))
    err = ulp_error(got, ref)
    i = int(np.argmax(err))
    bound = fm.MAX_ULP[name]
    assert err[i] <= bound, (
        f"{name}: {err[i]:.3f} ulp > {bound} at x={SWEEP[i]!r}: got {got[i]!r}, ref {ref[i]!r}")


@pytest.mark.parametrize("name", NAMES)
def test_max_abs_error_documented(name):
    """max |got - ref| / max(|ref|, 1) on |x| <= 20, i.e. the absolute error where the
    result is at most 1 in magnitude and the relative error elsewhere."""
    x = np.linspace(-20, 20, 400_001, dtype=F32)
    if name in ("log", "log1p"):
        x = np.abs(x)
    got = _apply(name, x).astype(np.float64)
    ref = _reference(name, x.astype(np.float64))
    assert np.array_equal(np.isfinite(got), np.isfinite(ref))
    fin = np.isfinite(ref) & np.isfinite(got)
    rel = np.abs(got[fin] - ref[fin]) / np.maximum(np.abs(ref[fin]), 1.0)
    assert rel.max() <= fm.MAX_ABS[name]


nan, inf = float("nan"), float("inf")
TINY = 1e-20
DENORM = float(np.finfo(F32).smallest_subnormal)

SPECIAL = {
    "exp": [(nan, nan), (inf, inf), (-inf, 0.0), (0.0, 1.0), (-0.0, 1.0),
            (100.0, inf), (89.0, inf), (-100.0, None), (-104.0, 0.0),
            (-200.0, 0.0), (88.72, None), (DENORM, 1.0), (TINY, 1.0)],
    "expm1": [(nan, nan), (inf, inf), (-inf, -1.0), (0.0, 0.0), (100.0, inf),
              (-100.0, -1.0), (-20.0, None), (TINY, TINY), (-TINY, -TINY),
              (DENORM, DENORM), (1e-5, None), (88.72, None)],
    "log": [(nan, nan), (inf, inf), (-inf, nan), (0.0, -inf), (-0.0, -inf), (-1.0, nan),
            (-DENORM, nan), (1.0, 0.0), (DENORM, None), (1e-40, None),
            (float(np.finfo(F32).max), np.log(float(np.finfo(F32).max)))],
    "log1p": [(nan, nan), (inf, inf), (-inf, nan), (0.0, 0.0), (-1.0, -inf), (-2.0, nan),
              (TINY, TINY), (-TINY, -TINY), (DENORM, DENORM), (1e-6, None),
              (-0.999999, np.log1p(float(F32(-0.999999)))), (1e30, None)],
    "tanh": [(nan, nan), (inf, 1.0), (-inf, -1.0), (0.0, 0.0), (20.0, 1.0), (-20.0, -1.0),
             (10.0, 1.0), (9.1, 1.0), (1e30, 1.0), (-1e30, -1.0), (TINY, TINY),
             (-TINY, -TINY), (DENORM, DENORM), (1e-4, None)],
    "sigmoid": [(nan, nan), (inf, 1.0), (-inf, 0.0), (0.0, 0.5), (100.0, 1.0),
                (-100.0, None), (-200.0, 0.0), (1e30, 1.0), (-1e30, 0.0),
                (-20.0, None), (20.0, None)],
    "sin": [(nan, nan), (inf, nan), (-inf, nan), (0.0, 0.0), (TINY, TINY), (-TINY, -TINY),
            (DENORM, DENORM), (1.5707964, None), (3.1415927, None), (1e6, None),
            (1048575.9, None), (1048576.0, None), (1e22, None), (-1e22, None),
            (float(np.finfo(F32).max), None), (1e38, None)],
    "cos": [(nan, nan), (inf, nan), (-inf, nan), (0.0, 1.0), (TINY, 1.0), (DENORM, 1.0),
            (1.5707964, None), (3.1415927, None), (1e6, None), (1048575.9, None),
            (1048576.0, None), (1e22, None), (-1e22, None),
            (float(np.finfo(F32).max), None), (1e38, None)],
}


@pytest.mark.parametrize("fastmath_caller", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_special_values(name, fastmath_caller):
    """Also with a fastmath=True caller: the functions keep their own (strict) flags."""
    xs = np.array([c[0] for c in SPECIAL[name]], dtype=F32)
    # None: use the float64 reference at the float32-rounded input
    ref = _reference(name, xs.astype(np.float64))
    want = np.array([ref[i] if c[1] is None else c[1] for i, c in enumerate(SPECIAL[name])])
    got = _apply(name, xs, fastmath=fastmath_caller)
    err = ulp_error(got, want)
    bad = err > fm.MAX_ULP[name]
    assert not bad.any(), list(zip(xs[bad], got[bad], want[bad]))


def test_exact_saturation_and_signs():
    x = np.array([20.0, -20.0, 9.5, -9.5, 1e-20, -1e-20, -0.0, 0.0], dtype=F32)
    t = _apply("tanh", x)
    assert t[0] == 1.0 and t[1] == -1.0 and t[2] == 1.0 and t[3] == -1.0
    assert t[4] == F32(1e-20) and t[5] == F32(-1e-20)
    assert np.signbit(t[6]) and not np.signbit(t[7])
    s = _apply("sigmoid", np.array([1e4, -1e4, 50.0, -150.0], dtype=F32))
    assert s.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert np.all(np.isfinite(s))


def test_scalar_call_from_python_and_float64_argument():
    # The dispatchers are ordinary njit functions; float64 arguments are rounded to float32.
    assert fm.exp_f32(F32(0.0)) == 1.0
    assert abs(fm.tanh_f32(0.5) - np.tanh(0.5)) < 1e-7
    assert isinstance(fm.log_f32(F32(2.0)), (float, np.floating))


def test_table_complete():
    assert set(fm.FAST_F32) >= {"exp", "expm1", "log", "log1p", "tanh", "sigmoid", "sin", "cos"}
    for name, f in fm.FAST_F32.items():
        assert callable(f)
        assert name in fm.MAX_ULP and name in fm.MAX_ABS


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@pytest.mark.parametrize("name", ["tanh", "exp", "log", "sigmoid", "sin"])
def test_loop_vectorises(name):
    flags = _cpu_flags()
    if not flags:
        pytest.skip("cannot read /proc/cpuinfo to determine SIMD support")
    if "avx" not in flags:
        pytest.skip("CPU has no AVX: packed 8-wide float code is not expected")
    loop = _loop(name)
    x = np.linspace(-3, 3, 64, dtype=F32)
    loop(x, np.empty_like(x))
    sig = loop.signatures[0]
    llvm = loop.inspect_llvm(sig)
    # float32 functions run 8 wide; sin/cos work in float64 internally (4 wide)
    assert re.search(r"<(8|16) x float>|<(4|8) x double>", llvm), "loop was not vectorised"
    asm = loop.inspect_asm(sig)
    packed = re.search(r"v(mul|add|fmadd\d*)p[sd]\s+[^\n]*%[yz]mm", asm)
    assert packed, "no packed ymm/zmm arithmetic"
    # no calls to scalar libm in the kernel
    assert not re.search(r"call[^\n]*(tanhf|expf|logf|sinf|cosf|sin|cos)\b", asm)
