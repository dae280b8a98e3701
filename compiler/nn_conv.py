"""Convolution and pooling over NCHW images: the layers over the CONV2D primitive and reductions.

conv2d is ONE CONV2D node (NCHW cross-correlation; ir/ops.py), whose VJP is two more CONV2D
nodes (compiler/vjp_rules.py) and whose code is a call of a cached kernel: patch matrix per
image + register-tiled dot products (compiler/codegen/conv.py, compiler/kernels/conv.py). It
replaced im2col written in the graph (PAD, transposes, a constant-index GATHER, MATMUL, and a
SCATTER_ADD backward): on the digits-CNN training step that was ~90 fused nodes whose
gather/scatter/transpose loop nests dominated both the cold Numba compile and the step.
Pooling with stride == kernel is a reshape and one reduction; other strides take the
max/mean over kh*kw strided slices. Re-exported by `compiler.nn`.
"""

from __future__ import annotations

import numpy as np

from compiler import primitives as F
from compiler.errors import ShapeMismatchError


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < 0 for v in pair):
        raise ValueError(f"{name} must be a non-negative int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _windows(x, kernel, stride, dilation, out_hw):
    """The kh*kw strided windows x[:, i*dh :: sh, j*dw :: sw] over axes (1, 2) of a
    (batch, H, W) array, as a list (pooling with stride != kernel)."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_hw
    views = []
    for i in range(kh):
        for j in range(kw):
            r, c = i * dh, j * dw
            views.append(x[:, r : r + sh * (ho - 1) + 1 : sh, c : c + sw * (wo - 1) + 1 : sw])
    return views


def _out_size(size: int, k: int, stride: int, dilation: int, what: str) -> int:
    span = dilation * (k - 1) + 1
    if size < span:
        raise ShapeMismatchError(f"{what}: the (padded) input size {size} is smaller than the "
                                 f"kernel span {span}", fix="pad the input or use a smaller kernel")
    return (size - span) // stride + 1


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1):
    """2-D cross-correlation (as PyTorch's conv2d): x (N, C, H, W), w (O, C, kh, kw),
    optional bias b (O,) -> (N, O, Ho, Wo).

    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> conv2d(x, np.ones((1, 1, 2, 2), np.float32), stride=2)[0, 0]
    array([[10., 18.],
           [42., 50.]], dtype=float32)
    """
    xs, ws = F.shape_of(x), F.shape_of(w)
    if len(xs) != 4 or len(ws) != 4:
        raise ShapeMismatchError(f"conv2d takes x (N, C, H, W) and w (O, C, kh, kw), got "
                                 f"x{tuple(xs)} and w{tuple(ws)}",
                                 fix="add the missing axes, e.g. x[None] for one image or "
                                 "x[:, None] for one channel")
    _, c, _, _ = xs
    o, wc, kh, kw = ws
    if wc != c:
        raise ShapeMismatchError(
            f"conv2d: x has {c} channels but w (O, C, kh, kw) = {tuple(ws)} expects {wc}",
            fix="the kernel's second axis must equal the input's channel axis",
        )
    (sh, sw), (ph, pw), (dh, dw) = (_pair(stride, "stride"), _pair(padding, "padding"),
                                    _pair(dilation, "dilation"))
    if sh == 0 or sw == 0 or dh == 0 or dw == 0:
        raise ValueError("conv2d stride and dilation must be positive")
    _out_size(xs[2] + 2 * ph, kh, sh, dh, "conv2d")
    _out_size(xs[3] + 2 * pw, kw, sw, dw, "conv2d")
    dtype = F.result_dtype(x, w)
    if dtype.kind != "f":
        dtype = np.dtype(np.float32) if dtype.itemsize <= 4 else np.dtype(np.float64)
    y = F.conv2d_primitive(F.astype(x, dtype), F.astype(w, dtype), (sh, sw),
                           ((ph, ph), (pw, pw)), (dh, dw))
    if b is not None:
        y = y + np.reshape(b, (1, o, 1, 1))
    return y


def _pool(x, kernel, stride, reduce_windows, reduce_blocks, name: str):
    xs = F.shape_of(x)
    if len(xs) != 4:
        raise ShapeMismatchError(f"{name} takes x (N, C, H, W), got shape {tuple(xs)}",
                                 fix="add the missing axes, e.g. x[None] for one image")
    kernel = _pair(kernel, "kernel")
    stride = kernel if stride is None else _pair(stride, "stride")
    n, c, h, w = xs
    ho = _out_size(h, kernel[0], stride[0], 1, name)
    wo = _out_size(w, kernel[1], stride[1], 1, name)
    if stride == kernel:
        (kh, kw) = kernel
        if (h, w) != (ho * kh, wo * kw):  # floor mode: rows/cols past the last window drop
            x = x[:, :, : ho * kh, : wo * kw]
        return reduce_blocks(np.reshape(x, (n, c, ho, kh, wo, kw)), (3, 5))
    # windows over axes (2, 3): view the array as (N*C, H, W) so _windows' axes line up
    flat = np.reshape(x, (n * c, h, w))
    views = _windows(flat, kernel, stride, (1, 1), (ho, wo))
    return np.reshape(reduce_windows(views), (n, c, ho, wo))


def _max_all(views):
    out = views[0]
    for view in views[1:]:
        out = np.maximum(out, view)
    return out


def _mean_all(views):
    out = views[0]
    for view in views[1:]:
        out = out + view
    return out * (1.0 / len(views))


def max_pool2d(x, kernel=2, stride=None):
    """Max over kernel windows of NCHW x; stride defaults to the kernel (non-overlapping).

    >>> max_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    return _pool(x, kernel, stride, _max_all, lambda v, axes: np.max(v, axis=axes), "max_pool2d")


def avg_pool2d(x, kernel=2, stride=None):
    """Mean over kernel windows of NCHW x; stride defaults to the kernel."""
    return _pool(x, kernel, stride, _mean_all, lambda v, axes: np.mean(v, axis=axes),
                 "avg_pool2d")
