"""Neural-network layers as plain functions over arrays: the primitives' richest users.

Every layer is written with NumPy calls (which dispatch to tracers) and primitives
(`stop_gradient`, `sigmoid`, `pad`, `random_uniform`), so the same code traces to IR
primitives under `compile` and runs eagerly on NumPy arrays. No layer has a derivative rule of
its own: autodiff differentiates the primitives it is composed of. Convolution and pooling
live in `compiler/nn_conv.py` and are re-exported here.

>>> import numpy as np
>>> from compiler import nn
>>> float(nn.cross_entropy(np.zeros((2, 4), np.float32), np.array([0, 3])))  # log(4)
1.3862943649291992
"""

from __future__ import annotations

import math

import numpy as np

from compiler import primitives as F
from compiler.errors import ShapeMismatchError, TraceError
from compiler.nn_conv import avg_pool2d, conv2d, max_pool2d
from compiler.tracing import Tracer

__all__ = [
    "LabelRangeError",
    "accuracy",
    "avg_pool2d",
    "conv2d",
    "cross_entropy",
    "dropout",
    "embedding",
    "gelu",
    "gru_cell",
    "layer_norm",
    "linear",
    "log_softmax",
    "logsumexp",
    "lstm_cell",
    "max_pool2d",
    "mse",
    "one_hot",
    "relu",
    "scaled_dot_product_attention",
    "sigmoid",
    "softmax",
]

class LabelRangeError(TraceError, ValueError):
    """Integer class labels outside [0, num_classes)."""


# -- activations ----------------------------------------------------------------------------


def relu(x):
    """max(x, 0).

    >>> relu(np.array([-1.0, 2.0]))
    array([0., 2.])
    """
    return np.maximum(x, 0.0)


def sigmoid(x):
    """1 / (1 + exp(-x)), the LOGISTIC primitive (no overflow for large |x|)."""
    return F.sigmoid(x)


def gelu(x):
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    c = math.sqrt(2.0 / math.pi)
    return 0.5 * x * (1.0 + np.tanh(c * (x + 0.044715 * x * x * x)))


# -- normalised exponentials (all stable: the max is subtracted, with a zero derivative) ----


def _stable_max(x, axis: int):
    # logsumexp is invariant to the shift, so its derivative is exact with stop_gradient.
    return F.stop_gradient(np.max(x, axis=axis, keepdims=True))


def logsumexp(x, axis: int = -1, keepdims: bool = False):
    """log(sum(exp(x), axis)) without overflow.

    >>> float(logsumexp(np.array([1000.0, 1000.0])))  # 1000 + log 2
    1000.6931471805599
    """
    m = _stable_max(x, axis)
    out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def log_softmax(x, axis: int = -1):
    """x - logsumexp(x): log-probabilities along `axis`."""
    shifted = x - _stable_max(x, axis)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(x, axis: int = -1):
    """exp(x) / sum(exp(x)) along `axis`, computed on x - max(x)."""
    e = np.exp(x - _stable_max(x, axis))
    return e / np.sum(e, axis=axis, keepdims=True)


# -- losses and metrics ---------------------------------------------------------------------


def one_hot(labels, num_classes: int, dtype=np.float32):
    """labels (...,) integers -> (..., num_classes) with a 1 at each label.

    >>> one_hot(np.array([2, 0]), 3)
    array([[0., 0., 1.],
           [1., 0., 0.]], dtype=float32)
    """
    return F.astype(F.equal(labels[..., None], np.arange(num_classes)), dtype)


def check_labels(labels, num_classes: int, what: str = "labels") -> None:
    """Raise LabelRangeError unless every label is an integer in [0, num_classes)."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise LabelRangeError(f"{what} must be integers, got dtype {labels.dtype}",
                              fix="convert them with labels.astype(np.int64)")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise LabelRangeError(
            f"{what} must be in [0, {num_classes}) for {num_classes} classes; found "
            f"{bad.size} out of range (first: {int(bad.ravel()[0])})",
            fix="check the label encoding, or the size of the last layer",
        )


def _class_targets(logits, labels, label_smoothing: float):
    num_classes = F.shape_of(logits)[-1]
    if F.shape_of(labels) != F.shape_of(logits)[:-1]:
        raise ShapeMismatchError(
            f"cross_entropy: logits {tuple(F.shape_of(logits))} need labels of shape "
            f"{tuple(F.shape_of(logits)[:-1])}, got {tuple(F.shape_of(labels))}",
            fix="give one integer label per row of logits (batch sizes must match)",
        )
    if isinstance(labels, Tracer):
        if labels.dtype.kind not in "iu":
            raise LabelRangeError(f"cross_entropy labels must be integers, got {labels.dtype}")
        labels.trace.label_bounds[labels.ir_var] = num_classes  # checked before each call
    else:
        check_labels(labels, num_classes, "cross_entropy labels")
    target = one_hot(labels, num_classes, F.result_dtype(logits))
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / num_classes
    return target


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Mean over the batch of -log softmax(logits)[label]; labels are integers.

    With `label_smoothing` e the target puts 1 - e + e/C on the label and e/C elsewhere.
    Labels are checked against the number of classes: now if they are constants, and by
    `train_step`/`fit` with NumPy before each compiled call if they are inputs.
    """
    target = _class_targets(logits, labels, label_smoothing)
    per_row = -np.sum(target * log_softmax(logits, axis=-1), axis=-1)
    return np.mean(per_row)


def mse(prediction, target):
    """Mean squared error over all elements."""
    diff = prediction - target
    return np.mean(diff * diff)


def accuracy(logits, labels):
    """Fraction of rows whose largest logit is at the label (ties count as correct)."""
    hit = F.equal(logits, np.max(logits, axis=-1, keepdims=True))
    picked = np.sum(F.astype(hit, np.float32) * one_hot(labels, F.shape_of(logits)[-1]), axis=-1)
    return np.mean(F.astype(F.greater(picked, 0.0), np.float32))


# -- dense layers ---------------------------------------------------------------------------


def linear(x, w, b=None):
    """x @ w (+ b), with w of shape (in, out)."""
    y = x @ w
    return y if b is None else y + b


def layer_norm(x, gamma=None, beta=None, eps: float = 1e-5):
    """Normalise the last axis to mean 0 and variance 1, then scale by gamma, shift by beta."""
    mu = np.mean(x, axis=-1, keepdims=True)
    centered = x - mu
    var = np.mean(centered * centered, axis=-1, keepdims=True)
    y = centered / np.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def embedding(table, ids):
    """Rows of `table` (vocab, dim) at integer `ids` (any shape): a GATHER on axis 0."""
    return np.take(table, ids, axis=0)


def dropout(x, rate: float, key, training: bool = True):
    """Zero each element with probability `rate` and scale the rest by 1/(1-rate).

    `key` is an explicit integer seed (a Python int or an int array, which may be traced, so
    a training loop can pass the step count): the same key gives the same mask. With
    `training=False` (evaluation) dropout is the identity.
    """
    if not training or rate == 0.0:
        return x
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    dtype = F.result_dtype(x)
    keep = F.greater_equal(F.random_uniform(key, F.shape_of(x), dtype), rate)
    return F.where(keep, x * (1.0 / (1.0 - rate)), 0.0)


# -- attention ------------------------------------------------------------------------------


def scaled_dot_product_attention(q, k, v, causal: bool = False, mask=None):
    """softmax(q kᵀ / sqrt(d) + mask) v over the last two axes: q (..., Tq, d), k and v
    (..., Tk, d). `causal` hides keys after each query (aligned at the end when Tq < Tk);
    `mask` (broadcastable bool, True = attend) hides more."""
    tq, d = F.shape_of(q)[-2:]
    tk = F.shape_of(k)[-2]
    scores = (q @ np.swapaxes(k, -1, -2)) * (1.0 / math.sqrt(d))
    allowed = None
    if causal:
        allowed = np.tril(np.ones((tq, tk), np.bool_), k=tk - tq)
    if mask is not None:
        allowed = mask if allowed is None else F.where(mask, allowed, False)
    if allowed is not None:
        # a large finite negative, not -inf: exp gives exactly 0 and no NaN appears anywhere
        scores = F.where(allowed, scores, -1e9)
    return softmax(scores, axis=-1) @ v


# -- recurrent cells (one step; loop them with compiler.scan) --------------------------------


def _gates(x, h, w_x, w_h, b_x, b_h):
    gx = x if w_x is None else x @ w_x  # w_x None: x is already projected (all steps at once)
    gx = gx if b_x is None else gx + b_x
    gh = h @ w_h if b_h is None else h @ w_h + b_h
    return gx, gh


def gru_cell(x, h, w_x, w_h, b_x=None, b_h=None):
    """One GRU step, PyTorch's `nn.GRUCell` equations with the gates side by side in the
    last axis, in its order (reset r, update z, new n): `w_x` (in, 3H), `w_h` (H, 3H),
    biases (3H,). Returns the new h (batch, H). With `w_x=None`, `x` is the input already
    projected (x W_x for every step in one matmul before the loop, as cuDNN does).

        r = σ(x W_xr + b_xr + h W_hr + b_hr)    z = σ(... z ...)
        n = tanh(x W_xn + b_xn + r (h W_hn + b_hn))    h' = (1 - z) n + z h

    >>> import numpy as np
    >>> h = gru_cell(np.ones((2, 3)), np.zeros((2, 4)), np.zeros((3, 12)), np.zeros((4, 12)))
    >>> h.shape, float(h.sum())
    ((2, 4), 0.0)
    """
    size = F.shape_of(h)[-1]
    gx, gh = _gates(x, h, w_x, w_h, b_x, b_h)
    r = sigmoid(gx[..., :size] + gh[..., :size])
    z = sigmoid(gx[..., size:2 * size] + gh[..., size:2 * size])
    n = np.tanh(gx[..., 2 * size:] + r * gh[..., 2 * size:])
    return n + z * (h - n)  # = (1 - z) n + z h


def lstm_cell(x, state, w_x, w_h, b=None):
    """One LSTM step, PyTorch's `nn.LSTMCell` with the gates side by side in the last axis, in
    its order (input i, forget f, cell g, output o): `state` = (h, c), `w_x` (in, 4H), `w_h`
    (H, 4H), `b` (4H,) (PyTorch's two biases summed). Returns the new (h, c).

        c' = σ(f) c + σ(i) tanh(g)    h' = σ(o) tanh(c')

    >>> import numpy as np
    >>> zeros = np.zeros((2, 4))
    >>> h, c = lstm_cell(np.ones((2, 3)), (zeros, zeros), np.zeros((3, 16)), np.zeros((4, 16)))
    >>> h.shape, c.shape
    ((2, 4), (2, 4))
    """
    h, c = state
    size = F.shape_of(h)[-1]
    gates, gh = _gates(x, h, w_x, w_h, b, None)
    gates = gates + gh
    i = sigmoid(gates[..., :size])
    f = sigmoid(gates[..., size:2 * size])
    g = np.tanh(gates[..., 2 * size:3 * size])
    o = sigmoid(gates[..., 3 * size:])
    c = f * c + i * g
    return o * np.tanh(c), c
