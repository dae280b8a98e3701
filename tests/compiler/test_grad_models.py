"""Gradients of whole models written in plain NumPy, against central differences, compiled vs
eager; and the golden joint-graph dump of a two-layer MLP (golden/mlp_joint.txt).

The golden printout names source lines relative to the MLP's `def` line (``mlp+2``), so
editing this file above the MLP does not change it. Regenerate it after an intended change
with ``CHAINJIT_UPDATE_GOLDEN=1 pytest tests/compiler/test_grad_models.py``.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from compiler import compile, grad, tree_flatten, tree_map, value_and_grad

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "mlp_joint.txt")


def two_layer_mlp(params, x, y):
    h = np.tanh(x @ params["w1"] + params["b1"])
    out = h @ params["w2"]
    return np.mean((out - y) ** 2)


def softmax_cross_entropy_mlp(params, x, labels):
    h = np.maximum(x @ params["w1"] + params["b1"], 0.0)
    logits = h @ params["w2"] + params["b2"]
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    logp = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return -np.mean(logp[np.arange(x.shape[0]), labels])


def bias_layer(w, b, x, scale):
    return np.sum(np.tanh(x @ w + b) * scale) + np.sum(b[None, :] ** 2)


def indexing_model(x, w):
    a = x[:, 1:] * x[:, :-1]
    b = np.take(w, np.array([0, 2, 2]), axis=0)
    c = np.concatenate([a, b], axis=0)
    d = c - c.mean(axis=1, keepdims=True)
    e = np.max(d, axis=0, keepdims=True) + np.sum(d**2, axis=1, keepdims=True)
    return np.sum(np.sin(e)) + np.sum(c[::2, 1:3] ** 2) + np.prod(w[0], keepdims=True)[0]


def init(rng, sizes):
    return {name: rng.normal(size=shape) * 0.5 for name, shape in sizes.items()}


RNG = np.random.default_rng(0)
MLP_PARAMS = init(RNG, {"w1": (6, 5), "b1": (5,), "w2": (5, 3), "b2": (3,)})
MLP_X = RNG.normal(size=(8, 6))
MLP_LABELS = RNG.integers(0, 3, 8)


def assert_grad_matches_finite_differences(fn, args, argnums, eps=1e-6, rtol=1e-6):
    """<u, grad f(x)> against (f(x + eps u) - f(x - eps u)) / 2 eps, u random, float64."""
    grads = grad(fn, argnums)(*args)
    rng = np.random.default_rng(1)
    directions = {i: tree_map(lambda a: rng.normal(size=np.shape(a)), args[i]) for i in argnums}

    def shifted(sign):
        moved = list(args)
        for i in argnums:
            moved[i] = tree_map(lambda a, u: a + sign * eps * u, args[i], directions[i])
        return fn(*moved)

    expected = (shifted(1) - shifted(-1)) / (2 * eps)
    got = sum(
        float(np.vdot(g, u))
        for k, i in enumerate(argnums)
        for g, u in zip(tree_flatten(grads[k])[0], tree_flatten(directions[i])[0])
    )
    assert got == pytest.approx(expected, rel=rtol, abs=1e-9)


def test_softmax_cross_entropy_mlp_grad_matches_finite_differences():
    assert_grad_matches_finite_differences(
        softmax_cross_entropy_mlp, (MLP_PARAMS, MLP_X, MLP_LABELS), (0,))


def test_two_layer_mlp_grad_matches_finite_differences():
    y = RNG.normal(size=(8, 3))
    assert_grad_matches_finite_differences(two_layer_mlp, (MLP_PARAMS, MLP_X, y), (0, 1))


def test_bias_layer_grad_matches_finite_differences():
    w, b, x = RNG.normal(size=(4, 3)), RNG.normal(size=3), RNG.normal(size=(5, 4))
    assert_grad_matches_finite_differences(bias_layer, (w, b, x, 0.7), (0, 1, 2, 3))


def test_indexing_model_grad_matches_finite_differences():
    x, w = RNG.normal(size=(4, 5)), RNG.normal(size=(3, 4))
    assert_grad_matches_finite_differences(indexing_model, (x, w), (0, 1))


def test_compiled_value_and_grad_matches_eager_mlp():
    eager_value, eager_grads = value_and_grad(softmax_cross_entropy_mlp)(
        MLP_PARAMS, MLP_X, MLP_LABELS)
    value, grads = compile(value_and_grad(softmax_cross_entropy_mlp))(
        MLP_PARAMS, MLP_X, MLP_LABELS)
    assert value == pytest.approx(eager_value, rel=1e-12)
    assert set(grads) == set(MLP_PARAMS)
    for name in MLP_PARAMS:
        np.testing.assert_allclose(grads[name], eager_grads[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("model, args", [
    (bias_layer, (RNG.normal(size=(4, 3)), RNG.normal(size=3), RNG.normal(size=(5, 4)), 0.7)),
    (indexing_model, (RNG.normal(size=(4, 5)), RNG.normal(size=(3, 4)))),
])
def test_compiled_value_and_grad_matches_eager(model, args):
    argnums = tuple(range(len(args)))
    eager = value_and_grad(model, argnums)(*args)
    compiled = compile(value_and_grad(model, argnums), backend="interpreter")(*args)
    for got, expected in zip(tree_flatten(compiled)[0], tree_flatten(eager)[0]):
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_mlp_float32_grads_match_float64():
    params32 = tree_map(lambda a: a.astype(np.float32), MLP_PARAMS)
    grads32 = grad(softmax_cross_entropy_mlp)(params32, MLP_X.astype(np.float32), MLP_LABELS)
    grads64 = grad(softmax_cross_entropy_mlp)(MLP_PARAMS, MLP_X, MLP_LABELS)
    for name in MLP_PARAMS:
        assert grads32[name].dtype == np.float32
        np.testing.assert_allclose(grads32[name], grads64[name], rtol=1e-4, atol=1e-6)


# -- the joint graph, pinned as text -------------------------------------------------------


def joint_dump() -> str:
    shapes = {"w1": (3, 4), "b1": (4,), "w2": (4, 2)}
    params = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    x, y = np.zeros((5, 3), np.float32), np.zeros((5, 2), np.float32)
    text = compile(value_and_grad(two_layer_mlp)).ir(params, x, y, stage="joint")
    first = two_layer_mlp.__code__.co_firstlineno
    here = re.escape(os.path.basename(__file__))
    return re.sub(here + r":(\d+)", lambda m: f"mlp+{int(m.group(1)) - first}", text) + "\n"


def test_mlp_joint_graph_matches_golden():
    text = joint_dump()
    if os.environ.get("CHAINJIT_UPDATE_GOLDEN"):
        with open(GOLDEN, "w") as f:
            f.write(text)
    with open(GOLDEN) as f:
        assert text == f.read()


def test_mlp_joint_graph_reads_as_matrix_calculus():
    text = joint_dump()
    for maths in ("dX = G Wᵀ", "dW = Xᵀ G", "dx = sum of g over broadcast axes",
                  "dx = g (1 - tanh²(x))"):
        assert maths in text
    # dW1 = Xᵀ G has W1's shape: the line defining it is typed f32[3,4]
    assert re.search(r"f32\[3,4\] = matmul .*vjp matmul\[1\] of \w+: dW = Xᵀ G", text)


def test_joint_graphs_pass_the_verifier():
    from ir.verifier import verify

    mlp = compile(value_and_grad(softmax_cross_entropy_mlp), backend="interpreter")
    verify(mlp.lowered(mlp.trace(MLP_PARAMS, MLP_X, MLP_LABELS), "joint"))
    hvp = compile(lambda w: grad(lambda w: np.sum(grad(indexing_model, 1)(MLP_X[:4, :5], w)))(w),
                  backend="interpreter")
    verify(hvp.lowered(hvp.trace(RNG.normal(size=(3, 4))), "joint"))
