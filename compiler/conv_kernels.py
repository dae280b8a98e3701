"""Numba kernels for CONV2D, compiled once and cached on disk, called by generated drivers.

compiler/codegen_conv.py emits one call per CONV2D node (`from compiler.conv_kernels import
...` at the top of the generated module), so a graph's cold compile does not re-compile the
convolution loops: they are compiled once per dtype and reused by every graph and process.

Both kernels are im2col per image into a small scratch matrix that stays in cache, then one
BLAS GEMM writing the NCHW output of that image directly (no transpose). Window pixels
outside the input (padding; negative padding crops) are zeros. Every copy runs over slices
that start at their first valid element, so loop indices are provably non-negative and the
copies vectorise (no wraparound check per element).

- `conv2d_rows`: cols (C*kh*kw, Ho*Wo); the inner copy runs along an output row.
- `conv2d_kernel_rows`: colsᵀ (Ho*Wo, C*kh*kw); the inner copy runs along a kernel row,
  for outputs narrower than the kernel (the weight gradient, whose "kernel" is a whole
  image and whose output is kh x kw); the GEMM reads colsᵀ transposed (a BLAS flag).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, error_model="numpy", inline="always")
def _copy(dst, src, n, step):
    if step == 1:
        for t in range(n):
            dst[t] = src[t]
    else:
        for t in range(n):
            dst[t] = src[t * step]


@numba.njit(cache=True, error_model="numpy", inline="always")
def _zero(dst, start, stop):
    for t in range(start, stop):
        dst[t] = 0


@numba.njit(cache=True, error_model="numpy")
def conv2d_rows(x, wm, out, kh, kw, sh, sw, loh, low, dh, dw):
    """out (B, O, Ho, Wo) = correlation of x (B, C, H, W) with wm (O, C*kh*kw)."""
    nb, c, h, wd = x.shape
    o, ho, wo = out.shape[1], out.shape[2], out.shape[3]
    cols = np.empty((c * kh * kw, ho * wo), x.dtype)
    for b in range(nb):
        xb = x[b]
        for ci in range(c):
            for i in range(kh):
                for j in range(kw):
                    dst = cols[(ci * kh + i) * kw + j]
                    # output columns whose input column x*sw + j*dw - low lies in [0, W)
                    lo = min(max(0, -((j * dw - low) // sw)), wo)
                    hi = max(min(wo, (wd - 1 - j * dw + low) // sw + 1), lo)
                    for y in range(ho):
                        row = dst[y * wo:(y + 1) * wo]
                        iy = y * sh + i * dh - loh
                        if iy < 0 or iy >= h:
                            _zero(row, 0, wo)
                            continue
                        _zero(row, 0, lo)
                        if hi > lo:
                            _copy(row[lo:], xb[ci, iy, lo * sw + j * dw - low:], hi - lo, sw)
                        _zero(row, hi, wo)
        np.dot(wm, cols, out[b].reshape((o, ho * wo)))


@numba.njit(cache=True, error_model="numpy")
def conv2d_kernel_rows(x, wm, out, kh, kw, sh, sw, loh, low, dh, dw):
    """As `conv2d_rows`, with the scratch matrix transposed (inner copy along kernel rows)."""
    nb, c, h, wd = x.shape
    o, ho, wo = out.shape[1], out.shape[2], out.shape[3]
    cols = np.empty((ho * wo, c * kh * kw), x.dtype)
    for b in range(nb):
        xb = x[b]
        for ci in range(c):
            for i in range(kh):
                for y in range(ho):
                    iy = y * sh + i * dh - loh
                    for xx in range(wo):
                        dst = cols[y * wo + xx, (ci * kh + i) * kw:(ci * kh + i + 1) * kw]
                        if iy < 0 or iy >= h:
                            _zero(dst, 0, kw)
                            continue
                        ix = xx * sw - low
                        # kernel columns whose input column ix + j*dw lies in [0, W)
                        lo = min(max(0, -(ix // dw)), kw)
                        hi = max(min(kw, (wd - 1 - ix) // dw + 1), lo)
                        _zero(dst, 0, lo)
                        if hi > lo:
                            _copy(dst[lo:], xb[ci, iy, ix + lo * dw:], hi - lo, dw)
                        _zero(dst, hi, kw)
        np.dot(wm, cols.T, out[b].reshape((o, ho * wo)))
