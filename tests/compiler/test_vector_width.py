"""The machine's full vector width: on an AVX-512 CPU the fast-maths loops and the max
reductions compile to 512-bit (zmm) instructions; `maximum_nan` (compiler/kernels/minmax.py)
has np.maximum's NaN rule, and compiled max reductions match NumPy (NaN, -inf, both dtypes)."""

import re

import numba
import numpy as np
import pytest

from compiler import compile
from compiler.kernels.fastmath import exp_f32, tanh_f32
from compiler.kernels.minmax import maximum_nan
from runtime.execution.machine import vector_bits

AVX512 = pytest.mark.skipif(vector_bits() < 512, reason="not an AVX-512 CPU")


@numba.njit(error_model="numpy")
def _tanh_loop(x, out):
    for i in range(x.size):
        out[i] = tanh_f32(x[i])


@numba.njit(error_model="numpy")
def _exp_loop(x, out):
    for i in range(x.size):
        out[i] = exp_f32(x[i])


@numba.njit(error_model="numpy")
def _row_max(x, out):
    for i in range(x.shape[0]):
        acc = np.float32(-np.inf)
        for j in range(x.shape[1]):
            acc = maximum_nan(acc, x[i, j])
        out[i] = acc


def _zmm(dispatcher) -> int:
    return sum(len(re.findall(r"%zmm\d+", asm)) for asm in dispatcher.inspect_asm().values())


@AVX512
@pytest.mark.parametrize("loop", [_tanh_loop, _exp_loop])
def test_fast_maths_loops_use_512_bit_vectors(loop):
    x = np.linspace(-5, 5, 1000, dtype=np.float32)
    loop(x, np.empty_like(x))
    assert _zmm(loop) > 20


@AVX512
def test_max_reduction_uses_512_bit_vectors():
    x = np.ones((4, 64), np.float32)
    _row_max(x, np.empty(4, np.float32))
    assert _zmm(_row_max) > 10


def test_maximum_nan_follows_np_maximum():
    @numba.njit
    def both(a, b):
        return maximum_nan(a, b)

    values = [np.nan, -np.inf, -1.5, 0.0, 2.0, np.inf]
    for dtype in (np.float32, np.float64):
        for a in values:
            for b in values:
                got = both(dtype(a), dtype(b))
                np.testing.assert_array_equal(got, np.maximum(dtype(a), dtype(b)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_max_reductions_match_numpy(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 19)).astype(dtype)
    x[3, 5] = np.nan
    x[7] = -np.inf
    f = compile(lambda x: (np.max(x * 2.0, axis=1), np.max(x + 1.0, axis=0)))
    rows, cols = f(x)
    np.testing.assert_array_equal(rows, np.max(x * 2.0, axis=1))
    np.testing.assert_array_equal(cols, np.max(x + 1.0, axis=0))
    assert "maximum_nan" in f.source(x)


def test_maximum_nan_runs_as_python_too():
    assert np.isnan(maximum_nan(np.float32(1), np.float32(np.nan)))
    assert maximum_nan(np.float32(-np.inf), np.float32(2.5)) == np.float32(2.5)
