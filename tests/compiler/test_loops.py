"""Structured loops (compiler/loops.py): scan, fori_loop and while_loop.

Each loop form is checked against the undecorated Python loop (the reference), the Numba
build against the interpreter, and gradients (order 1 and 2, float64) against central
differences by the inner-product check. Plus the errors a user can hit and the loop's shape
in the generated code (one loop in the driver, its body kernels shared).
"""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile, fori_loop, grad, nn, scan, value_and_grad, vjp, while_loop
from compiler.autodiff import AutodiffError
from compiler.errors import ShapeMismatchError
from compiler.loops import LoopError
from ir.verifier import verify
from runtime import fit, optim, train_step
from runtime.execution.cache import cached_text

RNG = np.random.default_rng(18)
W = RNG.normal(size=(4, 4)) * 0.5
U = RNG.normal(size=(3, 4)) * 0.5
XS = RNG.normal(size=(6, 2, 3))
H0 = RNG.normal(size=(2, 4)) * 0.1


def rnn(w, u, xs, h0):
    """A tanh RNN over xs with a pytree carry (h, running sum) and two stacked ys."""
    def step(carry, x):
        h, total = carry
        h = np.tanh(h @ w + x @ u)
        return (h, total + np.sum(h)), {"h2": np.sum(h * h, axis=1), "first": h[:, 0]}

    (h, total), ys = scan(step, (h0, 0.0 * np.sum(h0)), xs)
    return np.sum(np.sin(h)) + total + np.sum(ys["h2"] * ys["first"])


def rnn_reverse(w, u, xs, h0):
    def step(h, x):
        h = np.tanh(h @ w + x @ u)
        return h, h[0]

    h, ys = scan(step, h0, xs, reverse=True)
    return np.sum(h * h) + np.sum(ys * np.arange(1.0, 5.0))


def power_iteration(w, u, xs, h0):
    """fori_loop with the step index used in the body; xs closed over (indexed by it)."""
    def body(i, h):
        return np.tanh(h @ w + 0.1 * i * h + xs[0] @ u)

    return np.sum(fori_loop(0, 5, body, h0) ** 2)


def no_xs(w, u, xs, h0):
    def step(h, _):
        h = np.tanh(h @ w)
        return h, np.sum(h)

    h, ys = scan(step, h0, None, length=4)
    return np.sum(ys) + np.sum(h @ u.T)


MODELS = [rnn, rnn_reverse, power_iteration, no_xs]
ARGS = (W, U, XS, H0)


def _fd_check(fn, args, argnums, eps=1e-6, rtol=1e-6):
    """<u, grad f(x)> against the central difference of f along u, u random."""
    grads = compile(grad(fn, argnums), backend="interpreter")(*args)
    rng = np.random.default_rng(1)
    for slot, i in enumerate(argnums):
        direction = rng.normal(size=args[i].shape)
        plus = list(args)
        minus = list(args)
        plus[i] = args[i] + eps * direction
        minus[i] = args[i] - eps * direction
        fd = (fn(*plus) - fn(*minus)) / (2 * eps)
        got = float(np.sum(grads[slot] * direction))
        assert got == pytest.approx(fd, rel=rtol, abs=1e-8), (fn.__name__, i)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_loop_compiled_matches_python_loop(model):
    expected = model(*ARGS)  # undecorated: a Python loop on NumPy arrays
    assert compile(model, backend="interpreter")(*ARGS) == pytest.approx(expected, rel=1e-12)
    assert compile(model)(*ARGS) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_loop_gradient_matches_finite_differences(model):
    _fd_check(model, ARGS, (0, 1, 3))


@pytest.mark.parametrize("model", [rnn, power_iteration], ids=lambda m: m.__name__)
def test_loop_second_order_gradient_matches_finite_differences(model):
    def grad_norm(w, u, xs, h0):
        g = grad(model, (0, 3))(w, u, xs, h0)
        return np.sum(g[0] ** 2) + np.sum(np.cos(g[1]))

    _fd_check(grad_norm, ARGS, (0, 3), eps=1e-5, rtol=1e-5)


def test_scan_gradient_with_respect_to_xs():
    _fd_check(rnn, ARGS, (2,))


@pytest.mark.parametrize("model", [rnn, rnn_reverse], ids=lambda m: m.__name__)
def test_loop_value_and_grad_numba_matches_interpreter(model):
    fn = value_and_grad(model, (0, 1, 2, 3))
    value, grads = compile(fn)(*ARGS)
    ref_value, ref_grads = compile(fn, backend="interpreter")(*ARGS)
    assert value == pytest.approx(ref_value, rel=1e-12)
    for got, ref in zip(grads, ref_grads):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_scan_float32_forward_and_grad_match_reference():
    args = tuple(a.astype(np.float32) for a in ARGS)
    fn = value_and_grad(rnn, (0, 3))
    value, grads = compile(fn)(*args)
    ref_value, ref_grads = compile(fn, backend="interpreter")(*args)
    assert value.dtype == np.float32
    assert value == pytest.approx(ref_value, rel=1e-5)
    for got, ref in zip(grads, ref_grads):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_scan_returns_stacked_ys_in_order():
    def f(xs):
        return scan(lambda c, x: (c + x, c * 10.0 + x), np.float64(0.0), xs, reverse=True)

    xs = np.arange(1.0, 5.0)
    carry, ys = f(xs)
    assert carry == 10.0 and ys.tolist() == [91.0, 72.0, 43.0, 4.0]
    for backend in ("interpreter", "numba"):
        got_carry, got_ys = compile(f, backend=backend)(xs)
        assert got_carry == carry
        np.testing.assert_array_equal(got_ys, ys)


def test_scan_is_one_node_whatever_the_length():
    def f(xs, h):
        return scan(lambda c, x: (np.tanh(c + x), None), h, xs)[0]

    sizes = []
    for steps in (3, 30):
        graph = compile(f).trace(np.ones((steps, 4)), np.ones(4)).graph
        verify(graph)
        sizes.append((len(graph.nodes), len(graph.nodes[-1].params["body"].nodes)))
    assert sizes[0] == sizes[1]


def test_scan_driver_keeps_the_loop_and_shares_kernels_between_lengths():
    def f(w, xs, h):
        return np.sum(scan(lambda c, x: (np.tanh(c @ w + x), None), h, xs)[0])

    fn = compile(value_and_grad(f))
    w = np.ones((4, 4))
    short = fn.source(w, np.ones((3, 2, 4)), np.ones((2, 4)))
    long = fn.source(w, np.ones((40, 2, 4)), np.ones((2, 4)))
    # sizes are read from the arrays: one artefact (the cached text) for every length
    assert cached_text(short) == cached_text(long)
    driver = short.split("def driver(", 1)[1].split('"""chainjit kernel', 1)[0]
    assert driver.count("for step_") == 2  # the forward scan and its reverse
    assert "np.empty" not in driver.split("for step_", 1)[1].split("return", 1)[0]


def test_fori_loop_matches_python_loop_and_has_int_index():
    def f(x):
        return fori_loop(2, 7, lambda i, v: v * 0.5 + i, x)

    x = np.arange(3.0)
    np.testing.assert_allclose(compile(f)(x), f(x))
    np.testing.assert_allclose(compile(f, backend="interpreter")(x), f(x))


def test_fori_loop_with_empty_range_returns_init():
    def f(x):
        return fori_loop(3, 3, lambda i, v: v + 1.0, x)

    x = np.arange(3.0)
    np.testing.assert_array_equal(compile(f)(x), x)


def test_fori_loop_rejects_traced_bounds():
    def f(x, n):
        return fori_loop(0, n, lambda i, v: v + 1.0, x)

    with pytest.raises(LoopError, match="Python int bounds"):
        compile(f)(np.zeros(2), 3)


def test_while_loop_matches_python_loop():
    def f(x):
        return while_loop(lambda c: c[1] < 10, lambda c: (c[0] * 1.5, c[1] + 1), (x, 0))

    x = np.arange(1.0, 4.0)
    expected = f(x)
    for backend in ("interpreter", "numba"):
        got = compile(f, backend=backend)(x)
        np.testing.assert_allclose(got[0], expected[0])
        assert int(got[1]) == expected[1] == 10


def test_while_loop_data_dependent_trip_count():
    def halvings(x):
        return while_loop(lambda c: np.max(np.abs(c)) > 1.0, lambda c: c * 0.5, x)

    for x in (np.array([3.0, -0.5]), np.array([100.0, 1.0])):
        np.testing.assert_allclose(compile(halvings)(x), halvings(x))


def test_while_loop_reverse_mode_points_to_fori_loop():
    def f(x):
        return np.sum(while_loop(lambda c: np.sum(c) < 10.0, lambda c: c * 2.0, x))

    with pytest.raises(AutodiffError, match="fori_loop") as info:
        compile(grad(f))(np.ones(2))
    assert "test_loops.py" in str(info.value)


def test_scan_carry_dtype_change_names_the_leaf():
    def f(x):
        return scan(lambda c, x: ({"h": c["h"], "n": (c["n"] + x).astype(np.float32)}, None),
                    {"h": x[0], "n": x[0]}, x)

    with pytest.raises(ShapeMismatchError, match=r"carry\['n'\] from f64\[\] to f32\[\]"):
        compile(f)(np.ones(3))
    with pytest.raises(ShapeMismatchError, match=r"carry\['n'\]"):
        f(np.ones(3))  # the Python loop checks the same


def test_scan_carry_shape_change_names_the_leaf():
    def f(h, xs):
        return scan(lambda c, x: ((c[0], np.concatenate([c[1], x])), None), (h, h), xs)

    with pytest.raises(ShapeMismatchError, match=r"carry\[1\] from f64\[2\] to f64\[4\]"):
        compile(f)(np.ones(2), np.ones((3, 2)))


def test_scan_carry_structure_change_is_an_error():
    def f(h, xs):
        return scan(lambda c, x: ((c, c), None), h, xs)

    with pytest.raises(ShapeMismatchError, match="structure"):
        compile(f)(np.ones(2), np.ones((3, 2)))


def test_scan_mismatched_lengths_is_an_error():
    with pytest.raises(LoopError, match="disagree"):
        scan(lambda c, x: (c, None), 0.0, (np.ones(3), np.ones(4)))
    with pytest.raises(LoopError, match="length"):
        scan(lambda c, x: (c, None), 0.0, None)


def test_vjp_through_scan_matches_grad():
    def f(w, h0):
        return scan(lambda c, x: (np.tanh(c @ w) + x, None), h0, XS[:, :, :1] * np.ones(4))[0]

    out, pullback = vjp(f, W, H0)
    ct = RNG.normal(size=out.shape)
    gw, gh = pullback(ct)
    ref = grad(lambda w, h: np.sum(f(w, h) * ct), (0, 1))(W, H0)
    np.testing.assert_allclose(gw, ref[0], rtol=1e-10)
    np.testing.assert_allclose(gh, ref[1], rtol=1e-10)


def test_scan_checkpoint_gradient_matches_every_step_saved():
    def f(w, h0, checkpoint):
        step = lambda c, x: (np.tanh(c @ w + x[:, :1]), np.sum(c))  # noqa: E731
        h, ys = scan(step, h0, XS, checkpoint=checkpoint)
        return np.sum(h) + np.sum(ys * ys)

    fn = compile(grad(f, (0, 1)), static_argnums=(2,))
    full = fn(W, H0, None)
    for k in (2, 4):  # 4 does not divide the 6 steps
        got = fn(W, H0, k)
        for a, b in zip(got, full):
            np.testing.assert_allclose(a, b, rtol=1e-10)

    def saved(k):  # the stacked carries the top level keeps for the backward
        graph = fn.trace(W, H0, k).graph
        return sorted(v.shape for n in graph.nodes for v in n.outputs if v.shape[1:] == (2, 4))

    assert (6, 2, 4) in saved(None)  # per step: the carry (and the step's matmul)
    assert saved(2) == [(3, 2, 4)]  # only one carry per chunk of 2 steps


def test_nested_scan_matches_python_loop_and_gradient():
    def f(w, h0):
        def outer(h, x):
            inner, _ = scan(lambda c, y: (np.tanh(c @ w + y), None), h, x[None] * np.ones((2, 1)))
            return inner, np.sum(inner)

        h, ys = scan(outer, h0, XS[:, 0, :1] * np.ones((1, 4)))
        return np.sum(h) + np.sum(ys)

    args = (W, H0)
    assert compile(f)(*args) == pytest.approx(f(*args), rel=1e-12)
    _fd_check(f, args, (0, 1))


# -- recurrent cells, train_step and fit -----------------------------------------------------


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _gru_reference(x, h, w_x, w_h, b_x, b_h):
    """PyTorch's GRUCell equations, gate by gate."""
    n_h = h.shape[-1]
    g_x, g_h = x @ w_x + b_x, h @ w_h + b_h
    r = _sigmoid(g_x[:, :n_h] + g_h[:, :n_h])
    z = _sigmoid(g_x[:, n_h:2 * n_h] + g_h[:, n_h:2 * n_h])
    n = np.tanh(g_x[:, 2 * n_h:] + r * g_h[:, 2 * n_h:])
    return (1 - z) * n + z * h


def _lstm_reference(x, h, c, w_x, w_h, b):
    n_h = h.shape[-1]
    g = x @ w_x + h @ w_h + b
    i, f = _sigmoid(g[:, :n_h]), _sigmoid(g[:, n_h:2 * n_h])
    c = f * c + i * np.tanh(g[:, 2 * n_h:3 * n_h])
    return _sigmoid(g[:, 3 * n_h:]) * np.tanh(c), c


CELL = {"w_x": RNG.normal(size=(3, 12)) * 0.5, "w_h": RNG.normal(size=(4, 12)) * 0.5,
        "b_x": RNG.normal(size=12) * 0.1, "b_h": RNG.normal(size=12) * 0.1,
        "w_x4": RNG.normal(size=(3, 16)) * 0.5, "w_h4": RNG.normal(size=(4, 16)) * 0.5,
        "b4": RNG.normal(size=16) * 0.1}


def gru_sequence_loss(p, xs, h0):
    def step(h, x):
        h = nn.gru_cell(x, h, p["w_x"], p["w_h"], p["b_x"], p["b_h"])
        return h, np.sum(h ** 2)

    h, ys = scan(step, h0, xs)
    return np.sum(h) + np.sum(ys)


def lstm_sequence_loss(p, xs, h0):
    def step(state, x):
        state = nn.lstm_cell(x, state, p["w_x4"], p["w_h4"], p["b4"])
        return state, state[0][:, 0]

    (h, c), ys = scan(step, (h0, h0 * 0.5), xs)
    return np.sum(h * c) + np.sum(np.sin(ys))


def test_gru_and_lstm_cells_match_the_reference_equations():
    x, h, c = XS[0], H0, H0[::-1] * 3
    p = CELL
    np.testing.assert_allclose(nn.gru_cell(x, h, p["w_x"], p["w_h"], p["b_x"], p["b_h"]),
                               _gru_reference(x, h, p["w_x"], p["w_h"], p["b_x"], p["b_h"]))
    got = compile(nn.lstm_cell)(x, (h, c), p["w_x4"], p["w_h4"], p["b4"])
    for a, b in zip(got, _lstm_reference(x, h, c, p["w_x4"], p["w_h4"], p["b4"])):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    projected = nn.gru_cell(x @ p["w_x"], h, None, p["w_h"], None, p["b_h"])
    np.testing.assert_allclose(projected, _gru_reference(x, h, p["w_x"], p["w_h"], 0, p["b_h"]))


@pytest.mark.parametrize("model", [gru_sequence_loss, lstm_sequence_loss],
                         ids=lambda m: m.__name__)
def test_recurrent_cell_scan_gradients(model):
    assert compile(model)(CELL, XS, H0) == pytest.approx(model(CELL, XS, H0), rel=1e-12)
    grads = compile(grad(model))(CELL, XS, H0)
    ref = compile(grad(model), backend="interpreter")(CELL, XS, H0)
    rng = np.random.default_rng(2)
    for key in CELL:
        np.testing.assert_allclose(grads[key], ref[key], rtol=1e-10, atol=1e-12)
        direction = rng.normal(size=CELL[key].shape)
        eps = 1e-6
        shifted = [dict(CELL, **{key: CELL[key] + s * eps * direction}) for s in (1, -1)]
        fd = (model(shifted[0], XS, H0) - model(shifted[1], XS, H0)) / (2 * eps)
        assert np.sum(grads[key] * direction) == pytest.approx(fd, rel=1e-6, abs=1e-9), key


def _gru_lm(p, ids, targets):
    x = nn.embedding(p["emb"], ids) @ p["w_x"] + p["b_x"]
    h0 = np.zeros((ids.shape[0], 4), np.float32)

    def step(h, g):
        h = nn.gru_cell(g, h, None, p["w_h"], None, p["b_h"])
        return h, h

    _, hs = scan(step, h0, x.transpose(1, 0, 2))
    return nn.cross_entropy(hs.transpose(1, 0, 2) @ p["head"], targets)


def _lm_data():
    rng = np.random.default_rng(3)
    f32 = lambda *shape: (rng.normal(size=shape) * 0.3).astype(np.float32)  # noqa: E731
    params = {"emb": f32(5, 3), "w_x": f32(3, 12), "b_x": f32(12), "w_h": f32(4, 12),
              "b_h": f32(12), "head": f32(4, 5)}
    ids = np.tile(np.arange(5), (8, 2))[:, :7]  # a cycle: each id predicts the next
    return params, ids[:, :-1].copy(), ids[:, 1:].copy()


def test_scan_under_train_step_matches_an_sgd_update():
    params, x, y = _lm_data()
    expected = {k: v.copy() for k, v in params.items()}
    g = compile(grad(_gru_lm), backend="interpreter")(expected, x, y)
    expected = {k: v - np.float32(0.5) * g[k] for k, v in expected.items()}
    step = train_step(_gru_lm, optim.SGD(0.5), wait=True)
    loss = step(params, x, y)  # updates params in place
    assert float(loss) == pytest.approx(float(_gru_lm(_lm_data()[0], x, y)), rel=1e-5)
    for key in params:
        np.testing.assert_allclose(params[key], expected[key], rtol=1e-4, atol=1e-6)


def test_scan_under_fit_learns_a_cycle():
    params, x, y = _lm_data()
    history = fit(_gru_lm, params, (x, y), optim.Adam(0.05), epochs=30, batch_size=8,
                  progress=False, wait=True)
    assert history["loss"][-1] < 0.5 * history["loss"][0]


def test_gate_gradients_join_into_one_array_not_a_sum_of_pads():
    """The slices of a cell's gates have pads as gradients; their sum is one concatenation."""
    from compiler.pipeline import lower

    graph = lower(compile(grad(gru_sequence_loss)).trace(CELL, XS, H0).graph, "optimized")
    bodies = [n.params["body"] for n in graph.nodes if n.op.value == "scan"]
    backward = bodies[-1]
    ops_in_body = [n.op.value for n in backward.nodes]
    assert "pad" not in ops_in_body and "concatenate" in ops_in_body
