"""Matmuls that accumulate into another value (`W - lr * Xᵀ G`, an SGD update; `mu * v + g`)
become one BLAS call with (alpha, beta): compiler/passes/gemm_epilogue.py makes GEMM nodes,
codegen calls the matmul kernels with the coefficients. Checked: which
patterns match and which must not, the interpreter before and after the pass, the Numba build
against the interpreter (BLAS's threads and Numba's), in place and under a guard."""

from __future__ import annotations

import re

import numpy as np
import pytest

from compiler import compile
from compiler.codegen import loops as codegen_kernels
from compiler.kernels import blas as blas_kernels
from compiler.kernels import matmul as matmul_kernels
from compiler.passes.gemm_epilogue import fuse_gemm_epilogues
from compiler.pipeline import lower
from ir.interpreter import evaluate
from ir.ops import Op
from ir.verifier import verify
from runtime import optim, train_step
from tests.compiler.listing import expanded
from tests.compiler.test_fusion import fused

RNG = np.random.default_rng(5)


def _arrays(*shapes, dtype=np.float32):
    return [RNG.standard_normal(s).astype(dtype) for s in shapes]


def _gemms(graph):
    return [n for n in graph.nodes if n.op == Op.GEMM]


# (function, alpha, beta): the forms an optimiser update or a residual sum takes
PATTERNS = [
    (lambda x, w, g, p: p - 0.1 * (x.T @ g), -0.1, 1.0),
    (lambda x, w, g, p: (x.T @ g) * 0.5 + p, 0.5, 1.0),
    (lambda x, w, g, p: p + x.T @ g, 1.0, 1.0),
    (lambda x, w, g, p: x.T @ g - p, 1.0, -1.0),
    (lambda x, w, g, p: 0.9 * p + x.T @ g, 1.0, 0.9),
    (lambda x, w, g, p: 0.9 * p - 0.01 * (x.T @ g), -0.01, 0.9),
]


@pytest.mark.parametrize("k", range(len(PATTERNS)))
def test_matmul_accumulate_patterns_become_one_gemm_kernel(k):
    fn, alpha, beta = PATTERNS[k]
    x, w, g, p = _arrays((6, 4), (4, 3), (6, 3), (4, 3))
    graph = fused(fn, x, w, g, p)
    (gemm,) = _gemms(graph)
    assert not [n for n in graph.nodes if n.op == Op.MATMUL]
    assert gemm.params["alpha"] == pytest.approx(alpha)
    assert gemm.params["beta"] == pytest.approx(beta)
    assert set(gemm.params) == {"alpha", "beta"} and gemm.out.shape == (4, 3)


@pytest.mark.parametrize("k", range(len(PATTERNS)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_gemm_rule_is_the_folded_arithmetic_bit_for_bit(k, dtype):
    """The interpreter's GEMM rule, (alpha t) p + beta x, rounds as the nodes it replaced."""
    fn = PATTERNS[k][0]
    args = _arrays((6, 4), (4, 3), (6, 3), (4, 3), dtype=dtype)
    args[2] *= 1e3  # p's entries of another scale than x's, so rounding shows
    graph = compile(fn).trace(*args).graph
    once = fuse_gemm_epilogues(graph)
    assert len(_gemms(once)) == 1
    (want,), (got,) = evaluate(graph, args), evaluate(once, args)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_array_equal(got, want)


def test_what_must_not_become_a_gemm():
    x, g, p = _arrays((6, 4), (6, 3), (4, 3))
    cases = {
        # the product is read twice: it must be stored
        "product read again": (lambda x, g, p: (p - 0.1 * (x.T @ g), x.T @ g), (x, g, p)),
        # a scale that is not a compile-time scalar
        "array scale": (lambda x, g, p: p - p * (x.T @ g), (x, g, p)),
        # 0 * product is not 0 when the product has a NaN; BLAS would skip it
        "zero alpha": (lambda x, g, p: p + 0.0 * (x.T @ g), (x, g, p)),
        # batched products stay MATMUL
        "batched": (lambda x, g, p: p - 0.1 * (x.transpose(0, 2, 1) @ g),
                    (x.reshape(2, 3, 4), g.reshape(2, 3, 3), np.ones((2, 4, 3), np.float32))),
        # C would start as a copy of these: no pass saved (a bias add stays a loop kernel)
        "broadcast addend": (lambda x, g, p: p[0] + x.T @ g, (x, g, p)),
        "computed addend": (lambda x, g, p: np.tanh(p) - 0.1 * (x.T @ g), (x, g, p)),
        "not returned": (lambda x, g, p: np.tanh(p - 0.1 * (x.T @ g)), (x, g, p)),
    }
    for name, (fn, args) in cases.items():
        assert not _gemms(fused(fn, *args)), name
    ints = [np.arange(12).reshape(3, 4), np.arange(8).reshape(4, 2), np.ones((3, 2), np.int64)]
    assert not _gemms(fused(lambda a, b, c: c + a @ b, *ints)), "integer product"


def _scale(value, dtype=np.float32):
    return np.asarray(value, dtype)


# (function, alpha, beta) with a traced 0-d scale s (a learning-rate schedule's rate)
TRACED = [
    (lambda x, g, p, s: p - s * (x.T @ g), -1.0, 1.0),
    (lambda x, g, p, s: (x.T @ g) * s + p, 1.0, 1.0),
    (lambda x, g, p, s: 0.9 * p - (x.T @ g) * (0.5 * s), -1.0, 0.9),
]


@pytest.mark.parametrize("k", range(len(TRACED)))
def test_a_traced_scale_is_the_gemm_kernels_fourth_input(k):
    """`p - s (xᵀ g)` with s known only at run time: inputs (a, b, x, s), and alpha s is the
    coefficient of the call."""
    fn, alpha, beta = TRACED[k]
    x, g, p = _arrays((6, 4), (6, 3), (4, 3))
    graph = fused(fn, x, g, p, _scale(0.1))
    (gemm,) = _gemms(graph)
    assert len(gemm.inputs) == 4 and gemm.inputs[3].ndim == 0
    assert (gemm.params["alpha"], gemm.params["beta"]) == pytest.approx((alpha, beta))
    args = (x, g, p, _scale(0.37))
    traced = compile(fn).trace(*args).graph
    (want,), (got,) = evaluate(traced, args), evaluate(fuse_gemm_epilogues(traced), args)
    np.testing.assert_array_equal(got, want)  # (alpha t) p + beta x, bit for bit


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_traced_scale_of_zero_keeps_the_products_nans(monkeypatch, pooled, dtype):
    """BLAS skips a product scaled by zero, but p - 0 (xᵀ g) is NaN where xᵀ g is: the
    Numba build matches the interpreter for a rate of 0 too, NaNs included."""
    if pooled:
        monkeypatch.setattr(codegen_kernels, "PARALLEL_MIN_SIZE", 16)
    fn = TRACED[0][0]
    x, g, p = _arrays((6, 4), (6, 3), (4, 3), dtype=dtype)
    f, ref = compile(fn), compile(fn, backend="interpreter")
    assert "gemm_any(" in f.source(x, g, p, _scale(0.1, dtype)) or pooled  # may be 0
    bad = g.copy()
    bad[2, 1] = np.nan
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for s, grad in ((0.1, g), (0.0, g), (0.0, bad), (0.1, bad), (np.inf, g)):
        args = (x, grad, p, _scale(s, dtype))
        want = ref(*args)
        got = f(*args)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(f(x, bad, p, _scale(0.0, dtype))[:, 1]).all()


def test_the_pass_alone_keeps_meaning_and_is_idempotent():
    def fn(x, g, p, v):
        return p - 0.1 * (x.T @ g), 0.9 * v + x.T @ np.tanh(g)

    args = _arrays((6, 4), (6, 3), (4, 3), (4, 3))
    graph = compile(fn).trace(*args).graph
    once = fuse_gemm_epilogues(graph)
    verify(once)
    assert len(_gemms(once)) == 2
    for want, got in zip(evaluate(graph, args), evaluate(once, args), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert len(fuse_gemm_epilogues(once).nodes) == len(once.nodes)


def test_the_dump_shows_a_gemm_node_as_one_line():
    x, g, p = _arrays((6, 4), (6, 3), (4, 3))
    f = compile(lambda x, g, p: p - 0.1 * (x.T @ g))
    text = f.ir(x, g, p, stage="fused")
    line = next(line for line in text.splitlines() if "gemm[" in line)
    assert "alpha=-0.1" in line and "beta=1" in line
    assert "matmul" not in text and "fused" not in text, text  # no body: the node is the call
    assert "gemm" in f.summary(x, g, p)
    source = f.source(x, g, p)
    node_text = line.split("#")[0].strip()  # e:f32[4,3] = gemm[alpha=-0.1 beta=1] d b c
    assert f"    # {node_text}    # " in source, source  # the node's line as codegen's comment
    assert "= matmul" not in source and "= mul" not in source  # and no body under it


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_gemm_kernels_match_the_interpreter(monkeypatch, pooled, dtype):
    """On BLAS's threads (one `gemm` call) and in a pooled driver (the product's blocks on
    Numba's threads); operands transposed or not."""
    if pooled:
        monkeypatch.setattr(codegen_kernels, "PARALLEL_MIN_SIZE", 16)

    def fn(x, g, p, v, w):
        return p - 0.1 * (x.T @ g), 0.9 * v + np.tanh(x) @ w, np.tanh(x @ w)

    args = _arrays((6, 4), (6, 3), (4, 3), (6, 3), (4, 3), dtype=dtype)
    f = compile(fn)
    source = expanded(f.source(*args))  # each kernel under each call of it
    kernel = "matmul_f(?:32|64)" if pooled else "gemm"
    calls = re.findall(rf"\n *{kernel}\(\w+, \w+, \w+, (-?[0-9.e-]+), (-?[0-9.e-]+)\)", source)
    coefficients = sorted((round(float(a), 6), round(float(b), 6)) for a, b in calls)
    plain = [(1.0, 0.0)] if pooled else []  # tanh(x @ w): a plain product, on the kernels too
    assert coefficients == [(-0.1, 1.0), *plain, (1.0, 0.9)], source
    tol = 1e-5 if dtype == np.float32 else 1e-12
    want = compile(fn, backend="interpreter")(*args)
    for got, w in zip(f(*args), want, strict=True):
        np.testing.assert_allclose(got, w, rtol=tol, atol=tol)


def test_gemm_kernel_entry_points_match_numpy():
    for dtype in (np.float32, np.float64):
        for ta in (False, True):
            a = RNG.standard_normal((5, 7)).astype(dtype)
            a = np.ascontiguousarray(a.T).T if ta else a
            b = RNG.standard_normal((7, 300)).astype(dtype)  # columns split when pooled
            c = RNG.standard_normal((5, 300)).astype(dtype)
            want = 0.5 * c - 2.0 * (a @ b)
            tol = 1e-4 if dtype == np.float32 else 1e-12
            pooled = getattr(matmul_kernels, f"matmul_{'f32' if dtype == np.float32 else 'f64'}")
            for entry in (blas_kernels.gemm, blas_kernels.gemm_any, blas_kernels.gemm_strided,
                          pooled):
                out = c.copy()
                entry(a, b, out, -2.0, 0.5)
                np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
                empty_k = c.copy()  # K = 0: beta out, as BLAS
                entry(a[:, :0], b[:0], empty_k, -2.0, 0.5)
                np.testing.assert_allclose(empty_k, 0.5 * c, rtol=tol)
            wide = np.repeat(c, 2, axis=1)  # out without unit stride: staged, C kept
            blas_kernels.gemm_strided(a, b, wide[:, ::2], -2.0, 0.5)
            np.testing.assert_allclose(wide[:, ::2], want, rtol=tol, atol=tol)
            np.testing.assert_array_equal(wide[:, 1::2], c)
            for entry in (blas_kernels.gemm, pooled):  # what codegen never passes: an error
                with pytest.raises(ValueError, match="gemm_strided"):
                    entry(a, b, wide[:, ::2], -2.0, 0.5)


def _mlp_loss(params, x, y):
    h = np.maximum(x @ params["w1"] + params["b1"], 0.0)
    logits = h @ params["w2"] + params["b2"]
    return np.mean((logits - y) ** 2)


def _mlp(dtype=np.float32):
    params = {"w1": 0.3 * RNG.standard_normal((5, 8)), "b1": np.zeros(8),
              "w2": 0.3 * RNG.standard_normal((8, 2)), "b2": np.zeros(2)}
    params = {k: v.astype(dtype) for k, v in params.items()}
    x, y = _arrays((16, 5), (16, 2), dtype=dtype)
    return params, x, y


def _sgd_steps(opt, steps):
    """`steps` train steps with `opt`, compiled and on the interpreter from the same
    parameters: losses and parameters match after each, and the parameter arrays stay the same
    objects. Returns the compiled step's source and its in-place (donated) names."""
    params, x, y = _mlp()
    ref = {k: v.copy() for k, v in params.items()}
    step = train_step(_mlp_loss, opt)
    ref_step = train_step(_mlp_loss, opt, backend="interpreter")
    ids = {k: id(v) for k, v in params.items()}
    for _ in range(steps):
        np.testing.assert_allclose(step(params, x, y), ref_step(ref, x, y), rtol=1e-5)
        for k in params:
            assert id(params[k]) == ids[k]
            np.testing.assert_allclose(params[k], ref[k], rtol=1e-5, atol=1e-6)
    source = expanded(step.compiled.source(params, step.state, x, y))  # a kernel per call
    return source, set(re.findall(r"\n *(\w+) = \w+  # in place \(donated\)", source))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_steps_update_weights_in_place_with_gemm_kernels(momentum):
    """A train step's weight updates are gemm kernels written into the parameters (with
    momentum, the velocity is: v = mu v + dW); two steps match the interpreter's."""
    source, in_place = _sgd_steps(optim.SGD(0.05, momentum=momentum), 2)
    # each weight matrix (or its velocity) is C of a gemm call, its own memory when finite
    c_of_gemms = re.findall(r"\n *gemm\(\w+, \w+, (\w+), ", source)
    assert len(c_of_gemms) == 2 and set(c_of_gemms) <= in_place, source


def test_sgd_with_a_schedule_updates_weights_with_gemm_kernels():
    """A rate from a schedule is a traced scalar: the updates are still gemm kernels in
    place, and three steps (the last two at a rate of 0) match the interpreter's."""
    schedule = optim.step_decay(0.05, [1, 2], factor=0.0)  # 0.05, 0, 0
    source, in_place = _sgd_steps(optim.SGD(schedule), 3)
    c_of_gemms = re.findall(r"\n *gemm_any\(\w+, \w+, (\w+), \w+, ", source)  # a rate
    assert len(c_of_gemms) == 2 and set(c_of_gemms) <= in_place, source


def test_a_non_finite_loss_leaves_the_weights_as_they_were():
    """Under the guard the gemm kernel updates a copy when the loss is not finite."""
    params, x, y = _mlp()
    step = train_step(_mlp_loss, optim.SGD(0.05))
    step(params, x, y)
    before = {k: v.copy() for k, v in params.items()}
    bad = x.copy()
    bad[3, 1] = np.inf
    for _ in range(2):  # the checked call, then the fast path
        with pytest.raises(Exception, match="not finite"):
            step(params, bad, y)
        for k in params:
            np.testing.assert_array_equal(params[k], before[k])


def test_an_accumulator_that_is_also_an_operand_is_not_overwritten_while_read():
    """`W - lr * (Wᵀ G)` donated: W is read by the product, so the call cannot accumulate
    into W's memory while BLAS reads it; it accumulates into a copy, written back at the end."""
    w, g = _arrays((5, 5), (5, 5))

    def update(w, g):
        return w - 0.1 * (w.T @ g)

    want = compile(update, backend="interpreter")(w.copy(), g)
    step = compile(update, donate_argnums=0)
    assert _gemms(lower(step.trace(w, g).graph, "fused"))
    target = w.copy()
    out = step(target, g)
    assert out is target
    np.testing.assert_allclose(target, want, rtol=1e-5, atol=1e-6)
    assert "# in place (donated)" not in step.source(target, g)
