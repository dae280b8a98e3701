"""The CONV2D primitive: interpreter vs a loop reference (strides, padding incl. negative,
dilation), its VJP rule vs central differences (float64), Numba vs the interpreter for the
forward and both gradients in one compile, and the graph a conv layer traces to."""

import numpy as np
import pytest

from compiler import compile, nn, value_and_grad
from compiler import frontend as F
from ir.interpreter import EVAL_RULES
from ir.ops import Op

RNG = np.random.default_rng(0)

# (x shape, w shape, strides, padding ((lo, hi), (lo, hi)), dilation)
CASES = {
    "same_3x3": ((2, 3, 6, 5), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    "strided": ((2, 2, 9, 8), (3, 2, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),
    "dilated_uneven": ((1, 2, 9, 7), (2, 2, 2, 3), (2, 1), ((0, 1), (2, 0)), (2, 2)),
    "negative_padding": ((2, 1, 7, 6), (2, 1, 2, 2), (1, 3), ((-1, 2), (0, -1)), (1, 1)),
    "wide_kernel": ((2, 2, 5, 9), (3, 2, 4, 8), (1, 1), ((1, 1), (0, 0)), (1, 1)),
}


def conv_reference(x, w, strides, padding, dilation):
    """Direct loops over output pixels: out[n, o, y, x] = sum x[.., y s + i d - lo, ..] w."""
    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho = (h + sum(padding[0]) - dilation[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (wd + sum(padding[1]) - dilation[1] * (kw - 1) - 1) // strides[1] + 1
    out = np.zeros((n, o, ho, wo))
    for y in range(ho):
        for xx in range(wo):
            for i in range(kh):
                for j in range(kw):
                    r = y * strides[0] + i * dilation[0] - padding[0][0]
                    c = xx * strides[1] + j * dilation[1] - padding[1][0]
                    if 0 <= r < h and 0 <= c < wd:
                        out[:, :, y, xx] += x[:, :, r, c] @ w[:, :, i, j].T
    return out


def _case(name, dtype=np.float64):
    xs, ws, strides, padding, dilation = CASES[name]
    x, w = RNG.standard_normal(xs).astype(dtype), RNG.standard_normal(ws).astype(dtype)
    return x, w, {"strides": strides, "padding": padding, "dilation": dilation}


@pytest.mark.parametrize("name", sorted(CASES))
def test_conv2d_interpreter_matches_loop_reference(name):
    x, w, params = _case(name)
    got = EVAL_RULES[Op.CONV2D](x, w, **params)
    np.testing.assert_allclose(got, conv_reference(x, w, **params), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_conv2d_vjp_matches_central_differences(name):
    from compiler import vjp

    x, w, params = _case(name)
    f = lambda x, w: F.conv2d_primitive(x, w, **params)
    out, pullback = vjp(f, x, w)
    v = RNG.standard_normal(np.shape(out))
    gx, gw = pullback(v)
    eps = 1e-6
    for k, (arg, g) in enumerate(((x, gx), (w, gw))):
        u = RNG.standard_normal(arg.shape)
        plus = [x, w]
        minus = [x, w]
        plus[k], minus[k] = arg + eps * u, arg - eps * u
        numeric = np.vdot(v, (f(*plus) - f(*minus)) / (2 * eps))
        assert abs(np.vdot(u, g) - numeric) <= 1e-6 * max(1.0, abs(numeric)), (name, k)


def _loss(params):
    def loss(x, w):
        y = F.conv2d_primitive(x, w, **params)
        return np.sum(y * y * 0.5 + y)
    return loss


def test_conv2d_numba_forward_and_gradients_match_interpreter():
    # every case in ONE compiled function (one Numba compile); float32 as in training
    cases = [_case(name, np.float32) for name in sorted(CASES)]

    def total(args):
        return sum(_loss(params)(x, w) for (x, w), (_, _, params) in zip(args, cases))

    args = [(x, w) for x, w, _ in cases]
    want_v, want_g = compile(value_and_grad(total), backend="interpreter")(args)
    got_v, got_g = compile(value_and_grad(total), backend="numba")(args)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-5)
    for want_pair, got_pair in zip(want_g, got_g):
        for want, got in zip(want_pair, got_pair):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_conv2d_layer_traces_to_one_conv_and_its_step_to_three():
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    forward = compile(lambda x, w: nn.conv2d(x, w, padding=1), backend="interpreter")
    assert [n.op for n in forward.trace(x, w).graph.nodes] == [Op.CONV2D]
    loss = lambda x, w: np.sum(nn.conv2d(x, w, padding=1) ** 2)
    joint = compile(value_and_grad(loss, argnums=(0, 1)), backend="interpreter")
    graph = joint.lowered(joint.trace(x, w), "optimized")
    assert sum(n.op is Op.CONV2D for n in graph.nodes) == 3  # forward, dX, dW


def test_conv2d_eager_promotes_integer_input_to_float():
    x = np.arange(16).reshape(1, 1, 4, 4)
    y = nn.conv2d(x, np.ones((1, 1, 2, 2), np.float32), stride=2)
    assert y.dtype == np.result_type(x, np.float32)  # NumPy promotion: int64 + f32 -> f64
    np.testing.assert_array_equal(y[0, 0], [[10, 18], [42, 50]])
