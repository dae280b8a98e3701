"""compiler/kernels/matmul.py: matmuls shared out between Numba's threads (pooled drivers)."""

import numba
import numpy as np
import pytest

from compiler import compile, value_and_grad
from compiler.codegen import loops as codegen_kernels
from compiler.codegen import ops as codegen_ops
from compiler.kernels import blas
from compiler.kernels import matmul as matmul_kernels
from ir.types import DTYPES
from tests.compiler.listing import expanded

RNG = np.random.default_rng(11)


def _operand(rows, cols, dtype, transposed):
    """A (rows, cols) operand: a C array, or the transpose of one (F order)."""
    if transposed:
        return RNG.standard_normal((cols, rows)).astype(dtype).T
    return RNG.standard_normal((rows, cols)).astype(dtype)


SHAPES = [  # (m, k, n): rows split, columns split (n > m), single block, empty and k = 0
    (300, 40, 70), (20, 64, 900), (3, 5, 4), (1, 7, 1), (0, 3, 4), (5, 0, 6), (4, 3, 0)]


def matmul_entry(kind: str, dtype):
    """The matmul kernel entry for one dtype (each is compiled on first use of its name)."""
    return getattr(matmul_kernels, f"{kind}_{DTYPES[np.dtype(dtype)]}")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_matches_numpy_for_every_layout_and_thread_count(dtype, threads):
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        for m, k, n in SHAPES:
            for ta in (False, True):
                for tb in (False, True):
                    a, b = _operand(m, k, dtype, ta), _operand(k, n, dtype, tb)
                    out = np.full((m, n), np.nan, dtype)
                    matmul_entry("matmul", dtype)(a, b, out, 1.0, 0.0)
                    tol = 1e-4 if dtype == np.float32 else 1e-12
                    np.testing.assert_allclose(out, a @ b, rtol=tol, atol=tol,
                                               err_msg=f"{(m, k, n, ta, tb)}")
    finally:
        numba.set_num_threads(before)


def test_matmul_reads_strided_views_in_place():
    """Row-sliced operands and a column block of the output: the BLAS call takes their
    strides, nothing is copied, and the output's other columns are left alone."""
    a = RNG.standard_normal((40, 30)).astype(np.float32)[::2, 3:20]  # (20, 17), row stride 60
    b = RNG.standard_normal((17, 50)).astype(np.float32)
    out = np.zeros((20, 70), np.float32)
    matmul_entry("matmul", np.float32)(a, b, out[:, 10:60], 1.0, 0.0)
    np.testing.assert_allclose(out[:, 10:60], a @ b, rtol=1e-4, atol=1e-4)
    assert not out[:, :10].any() and not out[:, 60:].any()
    # no unit stride anywhere (codegen never passes these): a clear error; gemm_strided
    # copies them and is right
    a2, b2, out2 = a[:, ::2], b[::2, ::5], np.zeros((20, 20), np.float32)  # (20, 9) @ (9, 10)
    with pytest.raises(ValueError, match="gemm_strided"):
        matmul_entry("matmul", np.float32)(a2, b2, out2[:, ::2], 1.0, 0.0)
    blas.gemm_strided(a2, b2, out2[:, ::2], 1.0, 0.0)
    np.testing.assert_allclose(out2[:, ::2], a2 @ b2, rtol=1e-4, atol=1e-4)
    assert not out2[:, 1::2].any()


@pytest.mark.parametrize("threads", [1, 2])
def test_matmul_batched_matches_numpy(threads):
    """Each batch item op(x[i]) @ op(y[i]), where op transposes the stored C array's item
    when its flag is set (as codegen passes `k` for `q @ k.transpose(0, 2, 1)`)."""
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        for batch in (0, 1, 5):
            opx, opy = RNG.standard_normal((batch, 6, 4)), RNG.standard_normal((batch, 4, 3))
            for ta in (False, True):
                for tb in (False, True):
                    x = opx.transpose(0, 2, 1).copy() if ta else opx
                    y = opy.transpose(0, 2, 1).copy() if tb else opy
                    out = np.full((batch, 6, 3), np.nan)
                    matmul_entry("matmul_batched", np.float64)(x, ta, y, tb, out)
                    np.testing.assert_allclose(out, opx @ opy, rtol=1e-12, atol=1e-12)
    finally:
        numba.set_num_threads(before)


def _pooled_source_and_check(fn, *args):
    """Compile value_and_grad(fn) as a pooled driver (Numba's threads: matmul kernels, BLAS
    held) and check it against the interpreter; returns the generated source."""
    f = compile(value_and_grad(fn, argnums=tuple(range(len(args)))))
    value, grads = f(*args)
    want_value, want_grads = compile(value_and_grad(fn, argnums=tuple(range(len(args)))),
                                     backend="interpreter")(*args)
    np.testing.assert_allclose(value, want_value, rtol=1e-4, atol=1e-5)
    for g, w in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    return f.source(*args)


def test_a_pooled_driver_runs_its_matmuls_and_large_kernels_on_numba_threads(monkeypatch):
    """Enough loop work makes a driver pooled: its matmuls (2-D and batched, transposed
    operands read in place) call the matmul kernels instead of np.dot, its large kernels use
    prange, and it is called with BLAS held to one thread; its results match the
    interpreter's."""
    monkeypatch.setattr(codegen_kernels, "PARALLEL_MIN_SIZE", 64)
    monkeypatch.setattr(codegen_kernels, "POOLED_PARALLEL_MIN_SIZE", 32)

    def fn(q, k, v, w):
        s = np.tanh(q @ k.transpose(0, 2, 1)) @ v
        return np.sum(np.tanh(s.reshape(12, 6) @ w) ** 2)

    q, k = RNG.standard_normal((3, 4, 5)), RNG.standard_normal((3, 4, 5))
    v, w = RNG.standard_normal((3, 4, 6)), RNG.standard_normal((6, 7))
    args = [a.astype(np.float32) for a in (q, k, v, w)]
    source = expanded(_pooled_source_and_check(fn, *args))  # each kernel under each call
    assert "np.dot(" not in source
    assert source.count("matmul_batched_f32(") >= 3 and ", True, " in source  # k transposed
    assert "matmul_f32(" in source and "numba.prange(" in source
    plain = compile(fn)
    plain(*args)
    executable = plain.trace(*args).executable
    assert executable.call_driver is not executable.driver  # called with BLAS held


def test_a_small_driver_keeps_np_dot_on_blas_threads():
    def fn(x, w):
        return np.sum(np.tanh(x @ w))

    x, w = RNG.standard_normal((4, 5)).astype(np.float32), RNG.standard_normal((5, 3))
    source = _pooled_source_and_check(fn, x, w.astype(np.float32))
    assert "np.dot(" in source and "from compiler.kernels.matmul" not in source


def test_without_blas_thread_control_a_pooled_driver_keeps_np_dot(monkeypatch):
    """Each of Numba's threads calling a BLAS that runs its own threads would oversubscribe
    the cores: where the BLAS's threads cannot be held, matmuls stay on np.dot."""
    from compiler.codegen import generate
    from runtime.execution import blas

    monkeypatch.setattr(codegen_kernels, "PARALLEL_MIN_SIZE", 16)

    def fn(x, w):
        return np.tanh(x @ w)

    x, w = RNG.standard_normal((8, 5)).astype(np.float32), np.ones((5, 4), np.float32)
    f = compile(fn)
    lowered = f.lowered(f.trace(x, w), "fused")
    assert f"from {codegen_ops.MATMUL_KERNELS} import matmul_f32" in generate(lowered).listing()
    monkeypatch.setattr(blas, "blas_thread_controls", lambda: None)
    generated = generate(lowered)
    assert generated.threads and "np.dot(" in generated.listing()
    assert codegen_ops.MATMUL_KERNELS not in generated.listing()


def test_a_pooled_driver_takes_read_only_inputs(monkeypatch):
    """np.dot took read-only arrays; the matmul kernels' operands are typed read-only so
    they take both (a user's frozen array, a broadcast view)."""
    monkeypatch.setattr(codegen_kernels, "PARALLEL_MIN_SIZE", 16)

    def fn(x, w, q, k):
        return np.tanh(x @ w), q @ k.transpose(0, 2, 1)

    args = [RNG.standard_normal(s).astype(np.float32) for s in ((8, 5), (5, 4), (2, 3, 4),
                                                                  (2, 3, 4))]
    for a in args:
        a.flags.writeable = False
    f = compile(fn)
    got = f(*args)
    assert f"from {codegen_ops.MATMUL_KERNELS} import matmul" in f.source(*args)  # _f32, ...
    want = compile(fn, backend="interpreter")(*args)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
