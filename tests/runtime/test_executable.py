"""Executables: argument checks in the user's terms, non-contiguous arguments, work buffers
that never leak into results, and shape polymorphism (a new batch size compiles nothing)."""

import numpy as np
import pytest

from compiler import compile
from runtime.execution.executable import ArgumentError


def mlp(params, x):
    h = np.maximum(x @ params["w1"] + params["b1"], 0.0)
    return np.mean(np.tanh(h @ params["w2"]), axis=1)


def _params(rng, dtype=np.float32):
    return {"w1": rng.standard_normal((6, 5)).astype(dtype), "b1": np.zeros(5, dtype),
            "w2": rng.standard_normal((5, 3)).astype(dtype)}


def test_executable_dtype_mismatch_names_the_leaf_and_the_fix():
    rng = np.random.default_rng(0)
    params, x = _params(rng), rng.standard_normal((4, 6)).astype(np.float32)
    f = compile(mlp)
    f(params, x)
    executable = f.trace(params, x).executable
    leaves = [params["b1"], params["w1"].astype(np.float64), params["w2"], x]
    with pytest.raises(ArgumentError) as error:
        executable(leaves)
    assert str(error.value) == ("params['w1']: expected f32[6,5], got f64[6,5]; "
                                "cast with .astype(np.float32)")
    with pytest.raises(ArgumentError, match=r"x: expected f32\[4,6\], got f32\[3,6\]"):
        executable([params["b1"], params["w1"], params["w2"], x[:3]])


def test_non_contiguous_arguments_give_the_same_result():
    rng = np.random.default_rng(1)
    params = _params(rng)
    x_t = rng.standard_normal((6, 4)).astype(np.float32).T  # transposed view
    f = compile(mlp)
    want = mlp(params, np.ascontiguousarray(x_t))
    np.testing.assert_allclose(f(params, np.ascontiguousarray(x_t)), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f(params, x_t), want, rtol=1e-5, atol=1e-6)
    sliced = {**params, "w1": np.repeat(params["w1"], 2, axis=1)[:, ::2]}
    np.testing.assert_allclose(f(sliced, x_t), want, rtol=1e-5, atol=1e-6)


def test_results_are_never_overwritten_by_a_later_call():
    rng = np.random.default_rng(2)
    params = _params(rng)
    x1, x2 = (rng.standard_normal((4, 6)).astype(np.float32) for _ in range(2))
    f = compile(mlp)
    first = f(params, x1)
    kept = first.copy()
    executable = f.trace(params, x1).executable
    buffers = [a for a in executable.extra]
    assert executable.buffer_bytes > 0  # intermediates live in reused work buffers
    second = f(params, x2)
    assert second is not first
    np.testing.assert_array_equal(first, kept)
    assert all(a is b for a, b in zip(buffers, executable.extra))


def test_new_batch_size_reuses_the_compiled_driver():
    rng = np.random.default_rng(3)
    params = _params(rng)
    f = compile(mlp)
    for batch in (4, 7, 16):
        x = rng.standard_normal((batch, 6)).astype(np.float32)
        np.testing.assert_allclose(f(params, x), mlp(params, x), rtol=1e-5, atol=1e-6)
    drivers = {id(t.executable.driver): t.executable.driver for t in f._traces.values()}
    assert len(f._traces) == 3 and len(drivers) == 1
    (driver,) = drivers.values()
    assert len(driver.overloads) == 1  # one machine-code specialisation for every batch size


def test_scalars_in_and_out_keep_their_dtypes():
    f = compile(lambda x, s: np.sum(x * s))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = f(x, 2.0)
    assert isinstance(out, np.float32) and out == 30.0
    assert f(x, 3.0) == 45.0  # fast path, Python float weakly typed
    assert f(x, np.float32(1.0)) == 15.0
    assert f(x, np.array(0.5, np.float32)) == 7.5  # 0-d array argument
