"""compiler.nn: each layer eagerly vs a direct NumPy reference, traced vs eager (interpreter),
its derivative vs central differences (float64, inner-product form), and its errors."""

import numpy as np
import pytest

from compiler import compile, grad, nn
from compiler.errors import ShapeMismatchError
from ir.ops import Op

RNG = np.random.default_rng(0)


def _conv_reference(x, w, stride, padding, dilation):
    n, _c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, ho, wo), x.dtype)
    for i in range(ho):
        for j in range(wo):
            r, s = i * stride, j * stride
            window = xp[:, :, r : r + dilation * (kh - 1) + 1 : dilation,
                        s : s + dilation * (kw - 1) + 1 : dilation]
            out[:, :, i, j] = np.einsum("nckl,ockl->no", window, w)
    return out


def _pool_reference(x, k, s, reduce):
    n, c, h, w = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    out = np.zeros((n, c, ho, wo), x.dtype)
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = reduce(x[:, :, i * s : i * s + k, j * s : j * s + k], axis=(2, 3))
    return out


def _data(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


LABELS = np.array([0, 2, 1, 2, 0])
X4 = _data(2, 3, 6, 5)
W4 = _data(4, 3, 3, 3)

# name -> (layer as a function of float arrays, its float arguments, reference output or None)
LAYERS = {
    "relu": (nn.relu, [_data(3, 4)], lambda x: np.where(x > 0, x, 0)),
    "sigmoid": (nn.sigmoid, [_data(3, 4)], lambda x: 1 / (1 + np.exp(-x))),
    "gelu": (nn.gelu, [_data(3, 4)], None),
    "softmax": (nn.softmax, [_data(3, 4)],
                lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)),
    "log_softmax": (nn.log_softmax, [_data(3, 4)],
                    lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))),
    "logsumexp": (lambda x: nn.logsumexp(x, axis=0), [_data(3, 4)],
                  lambda x: np.log(np.exp(x).sum(0))),
    "cross_entropy": (lambda z: nn.cross_entropy(z, LABELS), [_data(5, 3)],
                      lambda z: -np.mean((z - np.log(np.exp(z).sum(-1, keepdims=True)))
                                         [np.arange(5), LABELS])),
    "cross_entropy_smoothed": (lambda z: nn.cross_entropy(z, LABELS, label_smoothing=0.1),
                               [_data(5, 3)], None),
    "mse": (nn.mse, [_data(3, 4), _data(3, 4)], lambda a, b: np.mean((a - b) ** 2)),
    "conv2d": (lambda x, w: nn.conv2d(x, w, padding=1), [X4, W4],
               lambda x, w: _conv_reference(x, w, 1, 1, 1)),
    "conv2d_strided_dilated": (lambda x, w, b: nn.conv2d(x, w, b, stride=2, dilation=2),
                               [_data(2, 3, 9, 8), _data(2, 3, 2, 3), _data(2)],
                               lambda x, w, b: _conv_reference(x, w, 2, 0, 2)
                               + b[None, :, None, None]),
    "max_pool2d": (lambda x: nn.max_pool2d(x, 2), [_data(2, 3, 4, 6)],
                   lambda x: _pool_reference(x, 2, 2, np.max)),
    "max_pool2d_floor": (lambda x: nn.max_pool2d(x, 2), [_data(1, 2, 5, 5)],
                         lambda x: _pool_reference(x, 2, 2, np.max)),
    "max_pool2d_overlapping": (lambda x: nn.max_pool2d(x, 3, 2), [_data(1, 2, 7, 7)],
                               lambda x: _pool_reference(x, 3, 2, np.max)),
    "avg_pool2d": (lambda x: nn.avg_pool2d(x, 2), [_data(2, 3, 4, 6)],
                   lambda x: _pool_reference(x, 2, 2, np.mean)),
    "avg_pool2d_overlapping": (lambda x: nn.avg_pool2d(x, 3, 1), [_data(1, 2, 5, 4)],
                               lambda x: _pool_reference(x, 3, 1, np.mean)),
    "layer_norm": (nn.layer_norm, [_data(3, 5), _data(5), _data(5)],
                   lambda x, g, b: (x - x.mean(-1, keepdims=True))
                   / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * g + b),
    "embedding": (lambda t: nn.embedding(t, np.array([[1, 0], [3, 3]])), [_data(4, 3)],
                  lambda t: t[np.array([[1, 0], [3, 3]])]),
    "dropout": (lambda x: nn.dropout(x, 0.5, key=7), [_data(6, 5)], None),
    "attention": (nn.scaled_dot_product_attention, [_data(2, 3, 4), _data(2, 5, 4),
                                                    _data(2, 5, 2)], None),
    "attention_causal": (lambda q, k, v: nn.scaled_dot_product_attention(q, k, v, causal=True),
                         [_data(2, 4, 3), _data(2, 4, 3), _data(2, 4, 2)], None),
}


@pytest.mark.parametrize("name", [n for n, spec in LAYERS.items() if spec[2] is not None])
def test_layer_eager_matches_reference(name):
    fn, args, reference = LAYERS[name]
    np.testing.assert_allclose(fn(*args), reference(*args), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_traced_matches_eager(name):
    fn, args, _ = LAYERS[name]
    args32 = [a.astype(np.float32) for a in args]
    traced = compile(fn, backend="interpreter")
    got = traced(*args32)
    assert np.asarray(got).dtype == np.float32
    np.testing.assert_allclose(got, fn(*args32), rtol=1e-5, atol=1e-6)


def _attention_reference(q, k, v, causal):
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if causal:
        scores = np.where(np.tril(np.ones(scores.shape[-2:], bool)), scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_reference(causal):
    q, k, v = _data(2, 4, 3), _data(2, 4, 3), _data(2, 4, 5)
    got = nn.scaled_dot_product_attention(q, k, v, causal=causal)
    np.testing.assert_allclose(got, _attention_reference(q, k, v, causal), rtol=1e-10)


def test_gelu_matches_tanh_formula():
    x = np.linspace(-4, 4, 9)
    expected = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(nn.gelu(x), expected, rtol=1e-12)


def test_softmax_large_logits_stay_finite():
    z = np.array([[1e4, 0.0, -1e4]], np.float32)
    traced = compile(lambda z: (nn.softmax(z), nn.log_softmax(z), nn.logsumexp(z)),
                     backend="interpreter")
    for value in traced(z):
        assert np.all(np.isfinite(value))
    np.testing.assert_allclose(traced(z)[0], [[1.0, 0.0, 0.0]])


def test_softmax_traces_stop_gradient_of_max():
    f = compile(nn.softmax, backend="interpreter")
    ops = [node.op for node in f.trace(np.zeros((2, 3), np.float32)).graph.nodes]
    assert Op.STOP_GRADIENT in ops and Op.REDUCE_MAX in ops


def test_cross_entropy_label_smoothing_matches_formula():
    z = _data(5, 3)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    target = np.full((5, 3), 0.1 / 3)
    target[np.arange(5), LABELS] += 0.9
    np.testing.assert_allclose(nn.cross_entropy(z, LABELS, 0.1),
                               -np.mean(np.sum(target * logp, -1)), rtol=1e-12)


def test_one_hot_traced_labels():
    f = compile(lambda y: nn.one_hot(y, 4), backend="interpreter")
    expected = np.eye(4, dtype=np.float32)[[3, 1]]
    np.testing.assert_array_equal(f(np.array([3, 1], np.int32)), expected)


def test_accuracy_counts_argmax_hits():
    z = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0]], np.float32)
    assert float(nn.accuracy(z, np.array([0, 1, 1]))) == pytest.approx(2 / 3)


def test_dropout_same_key_same_mask_and_eval_identity():
    x = np.ones((50, 40), np.float32)
    a, b = nn.dropout(x, 0.25, key=3), nn.dropout(x, 0.25, key=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, nn.dropout(x, 0.25, key=4))
    assert set(np.unique(a)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((a == 0).mean() - 0.25) < 0.03
    assert nn.dropout(x, 0.25, key=3, training=False) is x


def test_dropout_traced_key_matches_eager():
    f = compile(lambda x, key: nn.dropout(x, 0.5, key), backend="interpreter")
    x = np.ones((4, 8), np.float32)
    np.testing.assert_array_equal(f(x, np.int64(11)), nn.dropout(x, 0.5, 11))


def test_conv2d_lowers_to_one_conv2d():
    f = compile(lambda x, w: nn.conv2d(x, w, padding=1), backend="interpreter")
    graph = f.trace(X4.astype(np.float32), W4.astype(np.float32)).graph
    assert [n.op for n in graph.nodes] == [Op.CONV2D]


# -- errors ---------------------------------------------------------------------------------


def test_cross_entropy_constant_labels_out_of_range_raise_at_trace_time():
    f = compile(lambda z: nn.cross_entropy(z, np.array([0, 3])), backend="interpreter")
    with pytest.raises(nn.LabelRangeError, match=r"\[0, 3\).*first: 3"):
        f.trace(np.zeros((2, 3), np.float32))


def test_cross_entropy_negative_labels_raise_eagerly():
    with pytest.raises(nn.LabelRangeError, match="out of range"):
        nn.cross_entropy(np.zeros((2, 3)), np.array([0, -1]))


def test_cross_entropy_traced_labels_are_recorded_for_runtime_checks():
    f = compile(nn.cross_entropy, backend="interpreter")
    traced = f.trace(np.zeros((2, 3), np.float32), np.zeros(2, np.int64))
    assert traced.labels == [(1, 3, "labels")]  # input leaf 1, 3 classes, its path
    assert not hasattr(nn, "LABEL_BOUNDS")  # kept on the trace, not in a global


def test_cross_entropy_batch_mismatch_raises():
    with pytest.raises(ShapeMismatchError, match=r"labels of shape \(4,\), got \(3,\)"):
        nn.cross_entropy(np.zeros((4, 3)), np.array([0, 1, 2]))


def test_cross_entropy_float_labels_raise():
    with pytest.raises(nn.LabelRangeError, match="integers"):
        nn.cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))


def test_conv2d_channel_mismatch_raises():
    with pytest.raises(ShapeMismatchError, match="3 channels"):
        nn.conv2d(np.zeros((1, 3, 4, 4)), np.zeros((2, 2, 3, 3)))


def test_conv2d_kernel_larger_than_input_raises():
    with pytest.raises(ShapeMismatchError, match="kernel span 5"):
        nn.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 5, 5)))


# -- derivatives by composition, vs central differences -------------------------------------


def _check_vjp(fn, args, eps=1e-6, rtol=1e-6):
    """grad of <fn(args), c> along a random direction vs central differences (float64)."""

    out = np.asarray(fn(*args))
    cotangent = RNG.standard_normal(out.shape)

    def scalar(*xs):
        return np.sum(fn(*xs) * cotangent)

    argnums = tuple(range(len(args)))
    grads = grad(scalar, argnums=argnums)(*args)
    directions = [RNG.standard_normal(a.shape) for a in args]
    analytic = sum(float(np.sum(g * d)) for g, d in zip(grads, directions))
    plus = scalar(*[a + eps * d for a, d in zip(args, directions)])
    minus = scalar(*[a - eps * d for a, d in zip(args, directions)])
    numeric = float(plus - minus) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=rtol, abs=1e-8)


# relu / max-pool are not smooth at ties: random data keeps the check away from them.
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_vjp_matches_finite_differences(name):
    fn, args, _ = LAYERS[name]
    _check_vjp(fn, args)


def test_layer_vjp_under_compile_matches_eager():

    fn = lambda x, w: np.sum(nn.relu(nn.conv2d(x, w, padding=1)) ** 2)
    args = [X4.astype(np.float32), W4.astype(np.float32)]
    eager = grad(fn, argnums=(0, 1))(*args)
    traced = compile(grad(fn, argnums=(0, 1)), backend="interpreter")(*args)
    for a, b in zip(eager, traced):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
