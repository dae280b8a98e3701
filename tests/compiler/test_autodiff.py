"""The autodiff API: grad, value_and_grad, vjp and custom_vjp, eagerly, under compile and
nested; the reverse sweep's symbolic zeros; and the errors a user can run into."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile, custom_vjp, grad, stop_gradient, value_and_grad, vjp
from compiler.autodiff import AutodiffError
from compiler.errors import TraceError
from ir.ops import Op

INTERP = "interpreter"  # the logic under test; one model runs on Numba in test_grad_models
RNG = np.random.default_rng(0)
X = RNG.normal(size=(3, 4))
W = RNG.normal(size=(4, 2))


def loss(w, x):
    return np.sum(np.tanh(x @ w) ** 2)


def numeric_grad(fn, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        g[i] = (fn(x + d) - fn(x - d)) / (2 * eps)
    return g


def compiled_graph(fn, *args, stage="joint"):
    compiled = compile(fn, backend=INTERP)
    return compiled, compiled.lowered(compiled.trace(*args), stage)


# -- grad and value_and_grad ---------------------------------------------------------------


def test_grad_eager_matches_finite_differences():
    g = grad(loss)(W, X)
    np.testing.assert_allclose(g, numeric_grad(lambda w: loss(w, X), W), rtol=1e-6, atol=1e-8)


def test_grad_eager_returns_numpy():
    g = grad(loss)(W, X)
    assert type(g) is np.ndarray and g.shape == W.shape


def test_value_and_grad_argnums_tuple_gives_tuple():
    value, (gw, gx) = value_and_grad(loss, argnums=(0, 1))(W, X)
    assert value == pytest.approx(loss(W, X))
    np.testing.assert_allclose(gx, numeric_grad(lambda x: loss(W, x), X), rtol=1e-6, atol=1e-8)
    assert gw.shape == W.shape


def test_grad_negative_argnums_counts_from_the_end():
    np.testing.assert_allclose(grad(loss, argnums=-1)(W, X), grad(loss, argnums=1)(W, X))


def test_grad_pytree_argument_gives_same_structure():
    params = {"w": W, "layers": [np.ones(2), (np.float64(0.5),)]}

    def f(p):
        return np.sum((X @ p["w"] + p["layers"][0]) * p["layers"][1][0])

    g = grad(f)(params)
    assert set(g) == {"w", "layers"} and isinstance(g["layers"], list)
    assert isinstance(g["layers"][1], tuple)
    np.testing.assert_allclose(g["layers"][0], np.full(2, 0.5 * 3))
    assert float(g["layers"][1][0]) == pytest.approx(np.sum(X @ W + 1.0))


def test_grad_python_float_argument_is_differentiable():
    assert float(grad(lambda x, s: np.sum(x * s), argnums=1)(np.arange(3.0), 2.0)) == 3.0


def test_value_and_grad_has_aux_follows_jax():
    def f(w):
        out = X @ w
        return np.sum(out**2), {"out": out}

    (value, aux), g = value_and_grad(f, has_aux=True)(W)
    np.testing.assert_allclose(aux["out"], X @ W)
    assert value == pytest.approx(np.sum((X @ W) ** 2))
    np.testing.assert_allclose(g, 2 * X.T @ (X @ W))
    g2, aux2 = grad(f, has_aux=True)(W)
    np.testing.assert_allclose(g2, g)
    np.testing.assert_allclose(aux2["out"], X @ W)


def test_float32_stays_float32():
    w, x = W.astype(np.float32), X.astype(np.float32)
    value, g = value_and_grad(loss)(w, x)
    assert value.dtype == np.float32 and g.dtype == np.float32
    value, g = compile(value_and_grad(loss), backend=INTERP)(w, x)
    assert value.dtype == np.float32 and g.dtype == np.float32


def test_compiled_value_and_grad_matches_eager():
    eager = value_and_grad(loss, argnums=(0, 1))(W, X)
    compiled = compile(value_and_grad(loss, argnums=(0, 1)), backend=INTERP)(W, X)
    assert compiled[0] == pytest.approx(eager[0])
    for got, expected in zip(compiled[1], eager[1]):
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_grad_inside_compiled_function_composes():
    @compile(backend=INTERP)
    def sgd_step(w, x):
        return w - 0.1 * grad(loss)(w, x)

    np.testing.assert_allclose(sgd_step(W, X), W - 0.1 * grad(loss)(W, X), rtol=1e-12)


def test_stop_gradient_blocks_the_path():
    g = grad(lambda x: np.sum(x * stop_gradient(x)))(np.array([1.0, 2.0]))
    np.testing.assert_allclose(g, [1.0, 2.0])


def test_grad_of_unused_argument_is_zeros():
    gw, gx = grad(lambda w, x: np.sum(w**2), argnums=(0, 1))(W, X)
    np.testing.assert_array_equal(gx, np.zeros_like(X))
    np.testing.assert_allclose(gw, 2 * W)


def test_closed_over_value_is_a_constant_for_grad():
    # the argument is aliased, so grad sees only its own use of x, not the closure's
    def outer(x):
        return grad(lambda y: np.sum(y * x))(x)

    np.testing.assert_allclose(outer(np.array([3.0, 4.0])), [3.0, 4.0])
    np.testing.assert_allclose(compile(outer, backend=INTERP)(np.array([3.0, 4.0])), [3.0, 4.0])


def test_same_array_twice_gets_separate_gradients():
    x = np.array([1.0, 2.0])
    gx, gy = grad(lambda x, y: np.sum(x * x * y), argnums=(0, 1))(x, x)
    np.testing.assert_allclose(gx, 2 * x * x)
    np.testing.assert_allclose(gy, x * x)


# -- the sweep's symbolic zeros ------------------------------------------------------------


def test_backward_emits_no_work_for_inputs_without_gradient():
    # d/dw only: X's cotangent (G Wᵀ) must not be built, nor anything for the labels' path
    _, graph = compiled_graph(value_and_grad(loss), W, X)
    matmuls = [n for n in graph.nodes if n.op is Op.MATMUL]
    assert len(matmuls) == 2  # forward x @ w, backward dW = Xᵀ G
    assert any("dW = Xᵀ G" in n.note for n in matmuls)


def test_integer_values_get_no_gradient_nodes():
    def f(w, idx):
        return np.sum(w[idx] * idx.astype(np.float64))

    _, graph = compiled_graph(grad(f), W, np.array([0, 2]))
    backward = [n for n in graph.nodes if n.note.startswith("vjp")]
    allowed = {Op.CONSTANT, Op.MUL, Op.SCATTER_ADD, Op.RESHAPE, Op.BROADCAST_TO, Op.TRANSPOSE}
    assert {n.op for n in backward} <= allowed
    assert not any(n.op is Op.CAST for n in backward)


def test_disconnected_argument_gets_one_broadcast_zero():
    _, graph = compiled_graph(grad(lambda w, x: np.sum(w), argnums=1), W, X)
    zero = [n for n in graph.nodes if n.note.startswith("zero gradient")]
    assert [n.op for n in zero] == [Op.BROADCAST_TO]


# -- nested (grad of grad) -----------------------------------------------------------------


def test_hessian_vector_product_matches_finite_differences():
    v = RNG.normal(size=W.shape)

    def hvp(w):
        return grad(lambda w: np.sum(grad(loss)(w, X) * v))(w)

    eps = 1e-5
    expected = (grad(loss)(W + eps * v, X) - grad(loss)(W - eps * v, X)) / (2 * eps)
    np.testing.assert_allclose(hvp(W), expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(compile(hvp, backend=INTERP)(W), expected,
                               rtol=1e-5, atol=1e-8)


def test_second_derivative_of_scalar_function():
    d2 = grad(grad(lambda x: x**3 * 1.0 + np.sin(x)))(0.7)
    assert float(d2) == pytest.approx(6 * 0.7 - np.sin(0.7))


# -- vjp -----------------------------------------------------------------------------------


def test_vjp_of_non_scalar_output():
    out, vjp_fn = vjp(lambda w: np.tanh(X @ w), W)
    np.testing.assert_allclose(out, np.tanh(X @ W))
    g = RNG.normal(size=out.shape)
    (gw,) = vjp_fn(g)
    np.testing.assert_allclose(gw, X.T @ (g * (1 - out**2)), rtol=1e-12)
    (gw_again,) = vjp_fn(g)  # callable more than once
    np.testing.assert_allclose(gw_again, gw)


def test_vjp_under_compile_pytree_output():
    @compile(backend=INTERP)
    def f(w, x, g):
        _, vjp_fn = vjp(lambda w, x: {"a": x @ w, "b": np.sum(w)}, w, x)
        return vjp_fn({"a": g, "b": 1.0})

    g = RNG.normal(size=(3, 2))
    gw, gx = f(W, X, g)
    np.testing.assert_allclose(gw, X.T @ g + 1.0, rtol=1e-12)
    np.testing.assert_allclose(gx, g @ W.T, rtol=1e-12)


# -- custom_vjp ----------------------------------------------------------------------------


@custom_vjp
def clipped_square(x):
    return x * x


clipped_square.defvjp(lambda x: (x * x, x), lambda x, g: (np.clip(2 * x * g, -1.0, 1.0),))


def test_custom_vjp_uses_its_rule():
    g = grad(lambda x: np.sum(clipped_square(x)))(np.array([0.1, 3.0]))
    np.testing.assert_allclose(g, [0.2, 1.0])


def test_custom_vjp_runs_plainly_on_numpy():
    np.testing.assert_allclose(clipped_square(np.array([3.0])), [9.0])


def test_custom_vjp_under_compile_and_second_order():
    @custom_vjp
    def cube(x):
        return x**3

    cube.defvjp(lambda x: (x**3, x), lambda x, g: (3 * x * x * g,))
    x = np.array([0.5, -2.0])
    cubed_grad = compile(grad(lambda x: np.sum(cube(x))), backend=INTERP)
    np.testing.assert_allclose(cubed_grad(x), 3 * x * x)
    second = grad(lambda x: np.sum(grad(lambda x: np.sum(cube(x)))(x)))(x)
    np.testing.assert_allclose(second, 6 * x)


# -- stages --------------------------------------------------------------------------------


def test_ir_traced_stage_shows_forward_only_and_joint_shows_backward():
    f = compile(value_and_grad(loss), backend=INTERP)
    traced, joint = f.ir(W, X, stage="traced"), f.ir(W, X, stage="joint")
    assert "vjp" not in traced and traced.count("matmul") == 1
    assert "vjp matmul[1] of" in joint and "dW = Xᵀ G" in joint


# -- errors --------------------------------------------------------------------------------


def test_grad_of_non_scalar_output_names_the_function():
    def layer(w):
        return X @ w

    with pytest.raises(AutodiffError, match=r"grad of layer needs a float scalar output.*"
                       r"f64\[3,2\]"):
        grad(layer)(W)


def test_grad_of_integer_argument_is_an_error():
    def f(w, idx):
        return np.sum(w[idx])

    with pytest.raises(TraceError, match=r"grad of f with respect to idx.*int64"):
        grad(f, argnums=1)(W, np.array([0, 1]))


def test_grad_of_python_int_argument_is_an_error():
    with pytest.raises(AutodiffError, match="only float values have gradients"):
        grad(lambda n: n * 2.0)(3)


def test_argnums_out_of_range_is_an_error():
    with pytest.raises(AutodiffError, match=r"grad of loss with argnums=\(0, 2\).*argument 2"):
        grad(loss, argnums=(0, 2))(W, X)


def test_errors_are_trace_errors_naming_the_user_line():
    with pytest.raises(TraceError) as info:
        grad(loss, argnums=5)(W, X)
    assert info.value.source is not None and info.value.source.file == __file__


def test_custom_vjp_without_rule_is_an_error():
    @custom_vjp
    def f(x):
        return x

    with pytest.raises(AutodiffError, match="defvjp"):
        grad(lambda x: np.sum(f(x)))(np.ones(2))


def test_grad_of_closure_over_traced_value_with_numpy_argument():
    @compile(backend=INTERP)
    def f(w):
        return grad(lambda x: np.sum(x * w * w))(np.ones(2))

    np.testing.assert_allclose(f(np.array([2.0, 3.0])), [4.0, 9.0])


def test_value_and_grad_of_compiled_function_inlines_it():
    # the DESIGN pattern: @compile def loss ...; compile(value_and_grad(loss))(...)
    compiled_loss = compile(loss, backend=INTERP)
    value, g = compile(value_and_grad(compiled_loss), backend=INTERP)(W, X)
    assert value == pytest.approx(loss(W, X))
    np.testing.assert_allclose(g, grad(loss)(W, X), rtol=1e-12)
    np.testing.assert_allclose(grad(compiled_loss)(W, X), g, rtol=1e-12)


def test_has_aux_without_a_pair_is_an_error():
    with pytest.raises(AutodiffError, match="must return a pair"):
        value_and_grad(loss, has_aux=True)(W, X)


def test_vjp_cotangent_of_wrong_structure_is_an_error():
    _, vjp_fn = vjp(lambda w: (w, w), W)
    with pytest.raises(AutodiffError, match="structure of its output"):
        vjp_fn(W)


def test_custom_vjp_bwd_with_wrong_arity_is_an_error():
    @custom_vjp
    def f(x, y):
        return x * y

    f.defvjp(lambda x, y: (x * y, (x, y)), lambda res, g: (g * res[1],))
    with pytest.raises(AutodiffError, match="returned 1 cotangents for 2 arguments"):
        grad(lambda x: np.sum(f(x, x)))(np.ones(2))
