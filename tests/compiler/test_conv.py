"""The CONV2D primitive: interpreter vs a loop reference (strides, padding incl. negative,
dilation), its VJP rule vs central differences (float64), the Numba kernels of
compiler/kernels/conv.py vs the interpreter on random shapes (every path: short and long
patches, contiguous and dilated patch rows, stride-1 and strided weight gradients, the
K and M blocks of the dot products), Numba vs the interpreter for the forward and both
gradients in one compile (and on transposed and broadcast operands), and the graph a conv
layer traces to."""

import re

import numpy as np
import pytest

from compiler import compile, nn, tree_flatten, value_and_grad
from compiler import primitives as F
from compiler.kernels import conv as conv_kernels
from ir.interpreter import EVAL_RULES
from ir.ops import Op
from tests.compiler.listing import expanded

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


def _views_loss(x, w, b):
    """A transposed input (copied once), the broadcast cotangent of a plain sum, and a
    second convolution whose weight gradient conv(xᵀ, gᵀ) reads x and g in place, with a
    bias (its gradient is a sum over axes (0, 2, 3) around the kept channel axis)."""
    y = F.conv2d_primitive(np.transpose(x, (0, 1, 3, 2)), w, (2, 1), ((1, 0), (0, 2)), (1, 2))
    z = F.conv2d_primitive(x, w[:, :, :2], (1, 1), ((1, 1), (0, 1)), (1, 1))
    z = z + b[None, :, None, None]
    return np.sum(y) + np.sum(z * z)


def test_conv2d_numba_forward_and_gradients_match_interpreter():
    # every case in ONE compiled function (one Numba compile); float32 as in training
    cases = [_case(name, np.float32) for name in sorted(CASES)]
    views = (RNG.standard_normal((3, 2, 7, 6)).astype(np.float32),
             RNG.standard_normal((4, 2, 3, 2)).astype(np.float32),
             RNG.standard_normal(4).astype(np.float32))

    def total(args, views):
        return _views_loss(*views) + sum(
            _loss(params)(x, w) for (x, w), (_, _, params) in zip(args, cases))

    args = [(x, w) for x, w, _ in cases]
    want_v, want_g = compile(value_and_grad(total, argnums=(0, 1)),
                             backend="interpreter")(args, views)
    compiled = compile(value_and_grad(total, argnums=(0, 1)), backend="numba")
    got_v, got_g = compiled(args, views)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-5)
    want_leaves, got_leaves = tree_flatten(want_g)[0], tree_flatten(got_g)[0]
    assert len(got_leaves) == len(want_leaves) == 2 * len(cases) + 3
    for want, got in zip(want_leaves, got_leaves):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # weight gradients read in place: every case's and the views' second convolution (the
    # first one's xᵀ is a composed transpose and its gᵀ a broadcast: copied, conv2d_forward)
    source = expanded(compiled.source(args, views))  # each kernel under each call of it
    assert source.count("conv2d_weight_grad(") == len(cases) + 1
    # the bias gradient accumulates per channel in a local, read and written around the
    # inner loop (compiler/codegen/loops.py), not in memory on every pixel
    assert re.search(r"\n *(\w+)_acc = \1\[", source)


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


def _random_conv(rng, c, o, dtype):
    """A random valid geometry: (x, w, strides, padding, dilation), odd sizes included."""
    while True:
        kh, kw = rng.integers(1, 4, size=2)
        sh, sw = rng.integers(1, 4, size=2)
        dh, dw = rng.integers(1, 3, size=2)
        (ph0, ph1), (pw0, pw1) = rng.integers(-1, 3, size=(2, 2))
        h, wd = rng.integers(3, 12, size=2)
        if h + ph0 + ph1 >= dh * (kh - 1) + 1 and wd + pw0 + pw1 >= dw * (kw - 1) + 1:
            break
    x = rng.standard_normal((int(rng.integers(1, 4)), c, h, wd)).astype(dtype)
    w = rng.standard_normal((o, c, kh, kw)).astype(dtype)
    return x, w, (int(sh), int(sw)), ((int(ph0), int(ph1)), (int(pw0), int(pw1))), \
        (int(dh), int(dw))


def _check_kernels(x, w, strides, padding, dilation, rtol):
    """conv2d_forward and conv2d_weight_grad vs the interpreter's CONV2D (in float64)."""
    params = {"strides": strides, "padding": padding, "dilation": dilation}
    want = EVAL_RULES[Op.CONV2D](x.astype(np.float64), w.astype(np.float64), **params)
    o, c, kh, kw = w.shape
    (sh, sw), ((loh, _), (low, _)), (dh, dw) = strides, padding, dilation
    out = np.full(want.shape, np.nan, x.dtype)
    conv_kernels.conv2d_forward(x, w.reshape(o, -1), out, kh, kw, sh, sw, loh, low, dh, dw)
    scale = np.abs(want).max() + 1
    np.testing.assert_allclose(out, want, rtol=rtol, atol=rtol * scale)
    # the weight gradient against the CONV2D the VJP rule emits: conv(xᵀ, gᵀ)
    g = RNG.standard_normal(want.shape).astype(x.dtype)
    pad_w = tuple((lo, (k - 1) * d + (n - 1) * s + 1 - size - lo) for size, k, n, s, d, (lo, _)
                  in zip(x.shape[2:], (kh, kw), want.shape[2:], strides, dilation, padding))
    want_w = EVAL_RULES[Op.CONV2D](x.transpose(1, 0, 2, 3).astype(np.float64),
                                   g.transpose(1, 0, 2, 3).astype(np.float64),
                                   strides=dilation, padding=pad_w, dilation=strides)
    out_w = np.full(want_w.shape, np.nan, x.dtype)
    conv_kernels.conv2d_weight_grad(x, g, out_w, kh, kw, sh, sw, loh, low, dh, dw)
    scale = np.abs(want_w).max() + 1
    np.testing.assert_allclose(out_w, want_w, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("dtype", [np.float32,
                                   pytest.param(np.float64, marks=pytest.mark.slow)])
def test_conv2d_kernels_match_interpreter_on_random_shapes(dtype):
    # float64 is slow: its cold kernel compile (~10 s) is all the time it takes
    rng = np.random.default_rng(7)
    rtol = 1e-4 if dtype == np.float32 else 1e-11
    # channels 1-3: patches shorter than MIN_DOT_LENGTH (rank-1 updates); 5 and 16: dot
    # products; outputs 1-7: odd rows and partial 2x4 tiles
    for c in (1, 2, 3, 5, 16):
        for o in (1, 4, 7):
            _check_kernels(*_random_conv(rng, c, o, dtype), rtol)


def test_conv2d_kernels_long_dot_products_and_many_outputs():
    # patches of 60*3*3 = 540 > K_BLOCK values, 70 > M_BLOCK kernels; a stride-1 weight
    # gradient over 24 x 26 > K_BLOCK padded pixels
    assert 540 > conv_kernels.K_BLOCK and 70 > conv_kernels.M_BLOCK
    x = RNG.standard_normal((2, 60, 5, 4)).astype(np.float32)
    w = RNG.standard_normal((70, 60, 3, 3)).astype(np.float32)
    _check_kernels(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), 1e-4)
    x = RNG.standard_normal((2, 3, 24, 24)).astype(np.float32)
    w = RNG.standard_normal((5, 3, 3, 3)).astype(np.float32)
    _check_kernels(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), 1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_conv2d_kernels_give_the_same_result_on_any_thread_count(threads):
    # the images are shared out by an atomic counter: every thread count (and a worker
    # that finds the counter exhausted) must give the one-image-at-a-time answer
    numba = pytest.importorskip("numba")
    x = RNG.standard_normal((9, 5, 6, 6)).astype(np.float32)
    w = RNG.standard_normal((7, 5, 3, 3)).astype(np.float32)
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        _check_kernels(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), 1e-4)
        _check_kernels(x[:, :1], w[:, :1], (2, 1), ((0, 1), (1, 0)), (1, 1), 1e-4)
        _check_kernels(x[:1], w, (1, 1), ((1, 1), (1, 1)), (1, 1), 1e-4)  # one image
        empty, g = x[:0], np.zeros((0, 7, 6, 6), np.float32)  # no image: dW = 0
        out, out_w = np.zeros((0, 7, 6, 6), np.float32), np.full((5, 7, 3, 3), np.nan, np.float32)
        conv_kernels.conv2d_forward(empty, w.reshape(7, -1), out, 3, 3, 1, 1, 1, 1, 1, 1)
        conv_kernels.conv2d_weight_grad(empty, g, out_w, 3, 3, 1, 1, 1, 1, 1, 1)
        assert not out_w.any()
    finally:
        numba.set_num_threads(before)


def test_a_driver_with_a_convolution_is_called_with_blas_held_to_one_thread():
    from compiler.codegen import generate
    from compiler.codegen.driver import kernel_source_hash
    from runtime.execution.blas import blas_thread_controls

    x = RNG.standard_normal((2, 1, 5, 5)).astype(np.float32)
    w = RNG.standard_normal((2, 1, 3, 3)).astype(np.float32)
    dense = np.ones((5, 3), np.float32)
    conv = compile(lambda x, w: nn.conv2d(x, w, padding=1) @ dense)
    plain = compile(lambda x, w: x @ dense)
    conv_code = generate(conv.lowered(conv.trace(x, w), "fused"))
    assert conv_code.threads and not generate(plain.lowered(plain.trace(x, w), "fused")).threads
    # the library's machine code is linked into the kernel calling it: its source hash is in
    # that kernel's text (so a change to the library is a new kernel)
    assert f"# source {kernel_source_hash('compiler.kernels.conv')}" in conv_code.listing()
    np.testing.assert_allclose(conv(x, w), EVAL_RULES[Op.CONV2D](
        x, w, strides=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1)) @ dense, rtol=1e-5)
    executable = conv.trace(x, w).executable  # wrapped, unless this BLAS has no control
    wrapped = executable.call_driver is not executable.driver
    assert wrapped == (blas_thread_controls() is not None)
