"""Issue 17's NumPy API (tests/compiler/numpy_specs.py, merged into op_specs' OP_SPECS):
gradients against central differences (float64, the interpreter; grad of grad where smooth),
zero gradients where NumPy-level users expect none, the Numba build against NumPy and
against the interpreter's gradients in float32 and float64 (many functions per compiled
graph, so the table costs a few Numba compiles), and the errors that name what to use.

(Forward against NumPy, eagerly traced, is tests/compiler/test_trace_ops.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile, grad, value_and_grad, vjp
from compiler.errors import TracerConversionError, UnsupportedError
from tests.compiler.op_specs import NUMPY_SPECS, OP_SPECS, make_inputs
from tests.compiler.test_vjp_rules import assert_close, central_difference, inner

SPECS = {spec.name: spec for spec in NUMPY_SPECS}
DIFFERENTIABLE = sorted(name for name, spec in SPECS.items() if spec.grad)
SMOOTH = sorted(name for name in DIFFERENTIABLE if SPECS[name].second_order)
NOT_DIFFERENTIABLE = sorted(name for name, spec in SPECS.items() if not spec.grad)


def inputs(spec, dtype=np.float64, seed=0):
    return make_inputs(spec, np.random.default_rng(seed), dtype)


def test_numpy_specs_are_in_op_specs():
    assert set(SPECS) <= {spec.name for spec in OP_SPECS}


# -- gradients against central differences (float64, interpreter) ----------------------------


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_vjp_matches_finite_differences(name):
    spec = SPECS[name]
    xs = inputs(spec)
    rng = np.random.default_rng(1)
    out, vjp_fn = vjp(spec.fn, *xs)
    us = [rng.normal(size=np.shape(x)) for x in xs]
    v = rng.normal(size=np.shape(out))
    cts = vjp_fn(v)
    assert [np.shape(c) for c in cts] == [np.shape(x) for x in xs]
    expected = inner([v], [central_difference(spec.fn, xs, us, 1e-6)])
    assert_close(inner(us, cts), expected, 1e-6, name)


@pytest.mark.parametrize("name", SMOOTH)
def test_vjp_second_order_matches_finite_differences(name):
    spec = SPECS[name]
    xs = inputs(spec)
    rng = np.random.default_rng(2)
    v = rng.normal(size=np.shape(spec.fn(*xs)))
    us = [rng.normal(size=np.shape(x)) for x in xs]
    argnums = tuple(range(len(xs)))

    def directional(*xs):  # s(x) = <u, grad <v, f(x)>>
        grads = grad(lambda *xs: np.sum(spec.fn(*xs) * v), argnums)(*xs)
        return sum(np.sum(g * u) for g, u in zip(grads, us))

    ws = [rng.normal(size=np.shape(x)) for x in xs]
    hessian_ws = grad(directional, argnums)(*xs)
    expected = float(central_difference(directional, xs, ws, 1e-5))
    assert_close(inner(ws, hessian_ws), expected, 1e-5, name)


@pytest.mark.parametrize("name", NOT_DIFFERENTIABLE)
def test_non_differentiable_function_has_zero_gradient(name):
    spec = SPECS[name]
    xs = inputs(spec)
    v = np.random.default_rng(1).normal(size=np.shape(spec.fn(*xs)))
    grads = grad(lambda *xs: np.sum(spec.fn(*xs) * v), tuple(range(len(xs))))(*xs)
    for g, x in zip(grads, xs):
        assert np.shape(g) == np.shape(x)
        np.testing.assert_array_equal(g, 0.0, err_msg=name)


# -- the Numba build against NumPy and the interpreter --------------------------------------

# The table in chunks: one compiled graph per chunk and dtype. A cold compile of the table's
# forward takes ~75 s per dtype on 2 cores, its value_and_grad ~3.5 min: the default suite
# builds the float32 forward and the library primitives' gradients; float64 and the whole
# table's compiled gradients are slow tests (make test-all).
CHUNK = 50
CHUNKS = [sorted(SPECS)[k:k + CHUNK] for k in range(0, len(SPECS), CHUNK)]


def _batch(names, dtype):
    specs = [SPECS[n] for n in names]
    xs = [inputs(spec, dtype, seed=3) for spec in specs]
    expected = [np.asarray(spec.fn(*x)) for spec, x in zip(specs, xs)]
    rng = np.random.default_rng(4)
    vs = [rng.normal(size=e.shape).astype(dtype) if spec.grad else None
          for spec, e in zip(specs, expected)]

    def forward(xs):
        return [spec.fn(*x) for spec, x in zip(specs, xs)]

    def loss(xs, vs):
        outs = forward(xs)
        total = sum(np.sum(out * v) for out, v in zip(outs, vs) if v is not None)
        return total, outs

    return specs, xs, vs, expected, forward, value_and_grad(loss, has_aux=True)


def _check_forward(specs, outs, expected, dtype):
    for spec, got, want in zip(specs, outs, expected):
        got = np.asarray(got)
        assert got.shape == want.shape and got.dtype == want.dtype, spec.name
        tol = 10 * spec.tol if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=spec.name)


@pytest.mark.parametrize("chunk", range(len(CHUNKS)))
@pytest.mark.parametrize("dtype", [np.float32, pytest.param(np.float64, marks=pytest.mark.slow)])
def test_numba_matches_numpy(chunk, dtype):
    specs, xs, _, expected, forward, _ = _batch(CHUNKS[chunk], dtype)
    _check_forward(specs, compile(forward)(xs), expected, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(len(CHUNKS)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_gradients_match_interpreter(chunk, dtype):
    specs, xs, vs, expected, _, fn = _batch(CHUNKS[chunk], dtype)
    (_, outs), grads = compile(fn)(xs, vs)
    _, want_grads = compile(fn, backend="interpreter")(xs, vs)
    _check_forward(specs, outs, expected, dtype)
    for spec, g, wg in zip(specs, grads, want_grads):
        tol = 10 * spec.tol if dtype == np.float32 else 1e-10
        for a, b in zip(g, wg):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"d {spec.name}")


def test_numba_gradients_of_the_library_primitives():
    """The compiled VJPs of the new primitives in the default suite (the table's are slow)."""
    names = ["arctan2", "fmod", "sort", "solve", "det", "cholesky", "cumsum", "pad_reflect"]
    specs, xs, vs, expected, _, fn = _batch(names, np.float64)
    (_, outs), grads = compile(fn)(xs, vs)
    _, want_grads = compile(fn, backend="interpreter")(xs, vs)
    _check_forward(specs, outs, expected, np.float64)
    for spec, g, wg in zip(specs, grads, want_grads):
        for a, b in zip(g, wg):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=f"d {spec.name}")


# -- conventions ----------------------------------------------------------------------------


def test_sort_gradient_flows_through_the_permutation():
    x = np.array([3.0, -1.0, 2.0, 0.5])
    g = grad(lambda x: np.sum(np.sort(x) * np.arange(4.0)))(x)
    np.testing.assert_array_equal(g, [3.0, 0.0, 2.0, 1.0])


def test_argsort_ties_are_stable_and_nans_sort_last():
    x = np.array([[2.0, np.nan, 1.0, 2.0, 1.0, -np.inf]] * 2, np.float32)
    f = compile(lambda x: (np.argsort(x, axis=1), np.sort(x, axis=1)))
    got_index, got_sorted = f(x)
    np.testing.assert_array_equal(got_index[0], [5, 2, 4, 0, 3, 1])
    np.testing.assert_array_equal(got_sorted, np.sort(x, axis=1))


def test_roundings_are_exact_in_numba():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 0.49999997, 3.7, -3.7, 2.0**40 + 0.5, np.nan,
                  np.inf, -np.inf], np.float32)
    f = compile(lambda x: (np.round(x), np.floor(x), np.ceil(x), np.trunc(x), np.isnan(x),
                           np.isinf(x), np.isfinite(x), np.remainder(x, 1.25),
                           np.floor_divide(x, 1.25)))
    with np.errstate(invalid="ignore"):  # remainder and floor_divide of inf: NaN
        expected = (np.round(x), np.floor(x), np.ceil(x), np.trunc(x), np.isnan(x),
                    np.isinf(x), np.isfinite(x), np.remainder(x, 1.25), np.floor_divide(x, 1.25))
    for got, want in zip(f(x), expected):
        np.testing.assert_array_equal(got, want)


def test_integer_floor_division_and_remainder_follow_python_signs():
    x = np.array([7, -7, 7, -7, 0, 5], np.int64)
    y = np.array([2, 2, -2, -2, 3, 0], np.int64)
    f = compile(lambda x, y: (x // y, x % y, np.fmod(x, y)))
    with np.errstate(divide="ignore"):
        expected = (x // y, x % y, np.fmod(x, y))
    for got, want in zip(f(x, y), expected):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_padded_and_concatenated_values_in_flattened_loops():
    """Regression: a PAD or CONCATENATE output read by a flattened loop was sized
    `a.shape[0] * a.shape[1] + 2` (now compiler/codegen/emitter.py set_dims groups sizes)."""
    x = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    f = compile(lambda x: (np.pad(x, ((0, 0), (1, 1))) * 2.0,
                           np.concatenate([x, x], axis=1) + 1.0))
    padded, joined = f(x)
    np.testing.assert_array_equal(padded, np.pad(x, ((0, 0), (1, 1))) * 2.0)
    np.testing.assert_array_equal(joined, np.concatenate([x, x], axis=1) + 1.0)


def test_round_builtin_and_bool_sort():
    f = compile(lambda x: (round(x * 3), np.sort(x > 0), np.argsort(x > 0)),
                backend="interpreter")
    x = np.array([0.3, -1.2, 0.5, 2.0])
    got = f(x)
    np.testing.assert_array_equal(got[0], np.round(x * 3))
    np.testing.assert_array_equal(got[1], np.sort(x > 0))
    np.testing.assert_array_equal(got[2], np.argsort(x > 0, kind="stable"))


def test_np_array_is_numpys_own_outside_a_trace():
    numpy_array = np.array
    compile(lambda x: np.array([x, x]), backend="interpreter")(np.ones(2))
    grad(lambda x: np.sum(np.array([x, 2 * x])))(np.ones(2))
    assert np.array is numpy_array


def test_np_array_of_tracers_keeps_numpys_dtype():
    x = np.ones(3, np.float32)
    f = compile(lambda x: (np.array([x, x]), np.array([x.sum(), 1.0]), np.array([x], ndmin=3),
                           np.array([x, x], dtype=np.float64)), backend="interpreter")
    dtypes = [np.asarray(r).dtype for r in f(x)]
    assert dtypes == [np.float32, np.float64, np.float32, np.float64]
    assert f(x)[2].shape == (1, 1, 3)


def test_cholesky_gradient_reads_the_lower_triangle_only():
    a = np.array([[4.0, 1.0], [0.5, 3.0]])  # not symmetric: NumPy reads the lower triangle
    g = grad(lambda a: np.sum(np.linalg.cholesky(a)))(a)
    assert g[0, 1] == 0.0
    eps = 1e-6
    d = np.zeros_like(a)
    d[1, 0] = eps
    numeric = (np.sum(np.linalg.cholesky(a + d)) - np.sum(np.linalg.cholesky(a - d))) / (2 * eps)
    np.testing.assert_allclose(g[1, 0], numeric, rtol=1e-6)


# -- errors that say what to use instead -----------------------------------------------------


@pytest.mark.parametrize("fn, match", [
    (lambda x: np.where(x > 0), "data-dependent shape"),
    (lambda x: np.nonzero(x), "data-dependent shape"),
    (lambda x: np.argwhere(x > 0), "data-dependent shape"),
    (lambda x: np.linalg.svd(x), "svd"),
    (lambda x: np.linalg.eigh(x), "eigh"),
    (lambda x: np.linalg.norm(x, ord="nuc"), "SVD"),
    (lambda x: (x * 2).astype(np.int64) & 3, "bitwise"),
    (lambda x: np.pad(x, 1, mode="median"), "median"),
    (lambda x: x.sort(), "in place"),
    (lambda x: np.repeat(x, x.astype(np.int64)), "data-dependent"),
])
def test_unsupported_forms_raise_a_clear_error(fn, match):
    with pytest.raises(UnsupportedError, match=match) as info:
        compile(fn, backend="interpreter")(np.eye(3))
    assert info.value.fix


def test_writing_a_traced_value_into_a_numpy_array_names_the_fix():
    with pytest.raises(TracerConversionError, match="full_like"):
        compile(lambda x: np.copyto(np.zeros(3), x), backend="interpreter")(np.ones(3))


def test_full_of_a_traced_value_broadcasts_it():
    f = compile(lambda x: np.full((2, 3), x.sum()) + np.full(3, x[0], dtype=np.float32),
                backend="interpreter")
    x = np.arange(3.0)
    got = f(x)
    np.testing.assert_array_equal(got, np.full((2, 3), 3.0) + np.full(3, 0.0, np.float32))
    assert got.dtype == np.float64
