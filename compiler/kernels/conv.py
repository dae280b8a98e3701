"""Numba kernels for CONV2D, compiled once and cached on disk, called by generated drivers.

compiler/codegen/conv.py emits one call per CONV2D node (`from compiler.kernels.conv import
...` at the top of the generated module), so a graph's cold compile does not re-compile the
convolution loops: they are compiled once per dtype and reused by every graph and process.

No BLAS. The per-image products are small (conv 16->32 on 14x14 is (32x144)@(144x196)):
single-threaded OpenBLAS ran them at 35-45 GFLOP/s, and threaded OpenBLAS fell below 1
GFLOP/s whenever the other core was busy (a barrier per small GEMM). The products here are
register-tiled dot products (`_gemm_nt`: 2x4 outputs per pass over K, the K loop
vectorised), 50-75 GFLOP/s on one core at these shapes.

Threads: the images of a batch are shared out between the threads, one image at a time from
an atomic counter (`fetch_add`), each thread with its own scratch (and, for the
weight gradient, its own accumulator, summed at the end). One parallel region per
convolution, and no static split: with one core taken by another process, a static prange
over images made the CNN step 4x slower (16 -> 64 ms median, the region waiting for the
late thread's half), while with the counter the running thread takes the late one's images.
Measured on the CNN's convolutions (2 cores): 1.45-2.2x faster than one thread when idle,
0.8-1.9x with a busy loop on the other core.

- `conv2d_forward`: out (B, O, Ho, Wo) = CONV2D of x (B, C, H, W) with wm (O, C*kh*kw).
  Per image, a patch matrix (Ho*Wo, kh*kw*C), each patch contiguous, built from a padded
  channels-last copy of the image (one contiguous run of kw*C values per patch row when
  dw == 1), then `_gemm_nt` against the kernel reordered to (O, kh*kw*C). With few values
  per patch (conv 1->16: kh*kw*C = 9, too short for a vectorised dot product) the scratch
  is the transposed layout (C*kh*kw, Ho*Wo) and `_gemm_nn` accumulates rank-1 updates along
  output rows instead.
- `conv2d_weight_grad`: the weight gradient CONV2D(xᵀ, gᵀ) of a convolution, read from x
  (B, C, H, W) and g (B, O, Ho, Wo) themselves (no transposed copies): dW (O, C*kh*kw) +=
  g[b] (O, Ho*Wo) · colsᵀ per image, written out at the end as (C, O, kh, kw). With stride
  1 the columns are shifted windows of the zero-padded image (no im2col, see the function).

Window pixels outside the input (padding; negative padding crops) are zeros. Copies run over
slices that start at their first valid element, so the loops vectorise.
"""

from __future__ import annotations

import numba
import numpy as np

from compiler.kernels.parallel import fetch_add, launch_thread_pool, parallel_options

# Float sums may be reassociated (SIMD partial sums in a dot product) and contracted (FMA).
FASTMATH = {"reassoc", "contract"}
# Below this many values per patch (C*kh*kw) a dot product is too short to vectorise: the
# forward accumulates rank-1 updates along output rows instead (`_gemm_nn`).
MIN_DOT_LENGTH = 32
# Dot products run over K in blocks of this many values (the 2+4 rows of a tile stay in L1)
# and over at most this many rows of `a` per sweep of `b` (they stay in L2).
K_BLOCK = 512
M_BLOCK = 64
# At most this many threads share the images of a batch (see `_workers`).
MAX_WORKERS = 8

launch_thread_pool()

_JIT = {"cache": True, "error_model": "numpy", "fastmath": FASTMATH}


@numba.njit(inline="always", **_JIT)
def _copy(dst, src, n, step):
    for t in range(n):  # LLVM versions the loop for step == 1 (vector copy)
        dst[t] = src[t * step]


@numba.njit(inline="always", **_JIT)
def _zero(dst, start, stop):
    for t in range(start, stop):
        dst[t] = 0


@numba.njit(**_JIT)
def _gemm_nt(a, arows, b, brows, kk, c):
    """c (M, N) += the dot products of the rows of a with the rows of b, 2x4 per pass:
    row i of a is a[arows[i]:arows[i] + kk] and row j of b is b[brows[j]:brows[j] + kk]
    (flat arrays: rows may overlap, as the shifted windows of a padded image do). The last
    tiles repeat the last row of a / b (one loop body compiles faster than tail loops) and
    store only what is in c."""
    m, n = arows.shape[0], brows.shape[0]
    for k0 in range(0, kk, K_BLOCK):
        kb = min(K_BLOCK, kk - k0)
        for i0 in range(0, m, M_BLOCK):
            i1 = min(i0 + M_BLOCK, m)
            for j in range(0, n, 4):
                p0, p1 = brows[j] + k0, brows[min(j + 1, n - 1)] + k0
                p2, p3 = brows[min(j + 2, n - 1)] + k0, brows[min(j + 3, n - 1)] + k0
                b0, b1, b2, b3 = b[p0:p0 + kb], b[p1:p1 + kb], b[p2:p2 + kb], b[p3:p3 + kb]
                for i in range(i0, i1, 2):
                    q0, q1 = arows[i] + k0, arows[min(i + 1, i1 - 1)] + k0
                    a0, a1 = a[q0:q0 + kb], a[q1:q1 + kb]
                    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = a.dtype.type(0)
                    for t in range(kb):
                        x0, x1 = a0[t], a1[t]
                        y0, y1, y2, y3 = b0[t], b1[t], b2[t], b3[t]
                        s00 += x0 * y0
                        s01 += x0 * y1
                        s02 += x0 * y2
                        s03 += x0 * y3
                        s10 += x1 * y0
                        s11 += x1 * y1
                        s12 += x1 * y2
                        s13 += x1 * y3
                    if i + 1 < i1 and j + 3 < n:
                        c[i, j] += s00
                        c[i, j + 1] += s01
                        c[i, j + 2] += s02
                        c[i, j + 3] += s03
                        c[i + 1, j] += s10
                        c[i + 1, j + 1] += s11
                        c[i + 1, j + 2] += s12
                        c[i + 1, j + 3] += s13
                        continue
                    for r, v0, v1, v2, v3 in ((0, s00, s01, s02, s03), (1, s10, s11, s12, s13)):
                        if i + r < i1:
                            for q, v in enumerate((v0, v1, v2, v3)):
                                if j + q < n:
                                    c[i + r, j + q] += v


@numba.njit(**_JIT)
def _rows(n, stride):
    return np.arange(n) * stride


@numba.njit(**_JIT)
def _gemm_nn(a, b, c):
    """c (M, N) = a (M, K) · b (K, N) for a short K: rank-1 updates along the rows of c, one
    row at a time (more rows per pass need more runtime alias checks than LLVM makes, and
    the loop would not vectorise; a row stays in L1 either way)."""
    m, kk = a.shape
    n = c.shape[1]
    if kk == 0:
        _zero(c.reshape(-1), 0, m * n)
        return
    for i in range(m):
        ci = c[i]
        w0 = a[i, 0]
        b0 = b[0]
        for t in range(n):
            ci[t] = w0 * b0[t]
        for k in range(1, kk):
            w0 = a[i, k]
            bk = b[k]
            for t in range(n):
                ci[t] += w0 * bk[t]


@numba.njit(**_JIT)
def _im2col_rows(xb, cols, kh, kw, sh, sw, loh, low, dh, dw, ho, wo):
    """cols (C*kh*kw, ho*wo): row (c, i, j) holds input pixel (y*sh + i*dh - loh,
    x*sw + j*dw - low) of channel c at column (y, x); the inner copy runs along an output row."""
    c, h, wd = xb.shape
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


@numba.njit(inline="always", **_JIT)
def _window(xb, hp, wp, loh, low):
    """(r0, r1, s0, s1): the rows [r0, r1) and columns [s0, s1) of an (hp, wp) window
    starting at (-loh, -low) that lie inside the image xb (C, H, W)."""
    h, wd = xb.shape[1], xb.shape[2]
    return max(0, loh), min(hp, h + loh), max(0, low), min(wp, wd + low)


@numba.njit(**_JIT)
def _channels_last(xb, xt, loh, low):
    """xt (Hp, Wp, C) = the window of xb (C, H, W) starting at (-loh, -low); pixels outside
    xb are left as they are (zero from the allocation: every image has the same border)."""
    c = xb.shape[0]
    r0, r1, s0, s1 = _window(xb, xt.shape[0], xt.shape[1], loh, low)
    for r in range(r0, r1):
        for s in range(s0, s1):
            dst = xt[r, s]
            for ci in range(c):
                dst[ci] = xb[ci, r - loh, s - low]


@numba.njit(**_JIT)
def _patches(xt, cols, kh, kw, sh, sw, dh, dw, ho, wo):
    """cols (ho*wo, kh*kw*C): row (y, x) is the patch at output pixel (y, x) of the padded
    channels-last image xt, in (i, j, c) order."""
    c = xt.shape[2]
    flat = xt.reshape((xt.shape[0], xt.shape[1] * c))
    run = kw * c
    for y in range(ho):
        for x in range(wo):
            dst = cols[y * wo + x]
            for i in range(kh):
                src = flat[y * sh + i * dh]
                if dw == 1:  # the kw pixels of a patch row are one contiguous run
                    _copy(dst[i * run:], src[x * sw * c:], run, 1)
                else:
                    for j in range(kw):
                        _copy(dst[(i * kw + j) * c:], src[(x * sw + j * dw) * c:], c, 1)


@numba.njit(**_JIT)
def _workers(images):
    """How many workers (prange iterations) share a batch of `images`: at most one per image
    and `MAX_WORKERS`. Not `numba.get_num_threads()`: it is a ctypes call, and a function
    that makes one cannot be cached on disk. Workers beyond the thread count find the counter
    exhausted when their thread reaches them, and allocate nothing."""
    return max(1, min(MAX_WORKERS, images))


@numba.njit(parallel=parallel_options(), **_JIT)
def conv2d_forward(x, wm, out, kh, kw, sh, sw, loh, low, dh, dw):
    """out (B, O, Ho, Wo) = correlation of x (B, C, H, W) with wm (O, C*kh*kw): CONV2D with
    strides (sh, sw), low paddings (loh, low) and dilation (dh, dw)."""
    nb, c = x.shape[0], x.shape[1]
    o, ho, wo = out.shape[1], out.shape[2], out.shape[3]
    k, p = c * kh * kw, ho * wo
    workers, taken = _workers(nb), np.zeros(1, np.int64)
    if k < MIN_DOT_LENGTH:
        for _ in numba.prange(workers):
            b = fetch_add(taken)
            if b >= nb:  # a worker whose thread came late: nothing left
                continue
            cols = np.empty((k, p), x.dtype)
            while b < nb:
                _im2col_rows(x[b], cols, kh, kw, sh, sw, loh, low, dh, dw, ho, wo)
                _gemm_nn(wm, cols, out[b].reshape((o, p)))
                b = fetch_add(taken)
        return
    wk = np.empty((o, k), wm.dtype)  # the kernel in the patches' (i, j, c) order
    for oo in range(o):
        for ci in range(c):
            for t in range(kh * kw):
                wk[oo, t * c + ci] = wm[oo, ci * kh * kw + t]
    wrows, prows = _rows(o, k), _rows(p, k)
    hp, wp = (ho - 1) * sh + (kh - 1) * dh + 1, (wo - 1) * sw + (kw - 1) * dw + 1
    for _ in numba.prange(workers):
        b = fetch_add(taken)
        if b >= nb:
            continue
        xt = np.zeros((hp, wp, c), x.dtype)
        cols = np.empty((p, k), x.dtype)
        while b < nb:
            _channels_last(x[b], xt, loh, low)
            _patches(xt, cols, kh, kw, sh, sw, dh, dw, ho, wo)
            ob = out[b].reshape((o, p))
            _zero(ob.reshape(-1), 0, o * p)
            _gemm_nt(wk.reshape(-1), wrows, cols.reshape(-1), prows, k, ob)
            b = fetch_add(taken)


@numba.njit(**_JIT)
def _padded(xb, xp, loh, low):
    """xp (C, Hp, Wp) = the window of xb (C, H, W) starting at (-loh, -low); pixels outside
    xb are left as they are (zero from the allocation: every image has the same border)."""
    c = xb.shape[0]
    r0, r1, s0, s1 = _window(xb, xp.shape[1], xp.shape[2], loh, low)
    if s1 > s0:
        for ci in range(c):
            for r in range(r0, r1):
                _copy(xp[ci, r, s0:], xb[ci, r - loh, s0 - low:], s1 - s0, 1)


@numba.njit(parallel=parallel_options(), **_JIT)
def conv2d_weight_grad(x, g, out, kh, kw, sh, sw, loh, low, dh, dw):
    """out (C, O, kh, kw) = sum over images b of the correlation of x[b] (C, H, W) with g[b]
    (O, Ho, Wo): the weight gradient (transposed) of the convolution of x with strides
    (sh, sw), low paddings (loh, low) and dilation (dh, dw) whose output cotangent is g.
    This is CONV2D(xᵀ, gᵀ) with strides (dh, dw) and dilation (sh, sw).

    Stride 1: with the image zero-padded to (Hp, Wp) and g[b] to (Ho, Wp) (zero columns
    past Wo), the window of kernel tap (c, i, j) over all outputs is the run of Ho*Wp values
    of the flat padded image at offset (c*Hp + i*dh)*Wp + j*dw: the products read both
    operands in place, no im2col. (Garbage columns meet zeros of g, so only a non-finite
    input pixel could leak in, as NaN.) Other strides: the forward's im2col per image."""
    nb, c = x.shape[0], x.shape[1]
    o, ho, wo = g.shape[1], g.shape[2], g.shape[3]
    k = c * kh * kw
    workers, taken = _workers(nb), np.zeros(1, np.int64)
    accs = np.zeros((workers, o, k), out.dtype)  # one accumulator per thread
    padded = sh == 1 and sw == 1
    if padded:
        hp, wp = ho + (kh - 1) * dh, wo + (kw - 1) * dw
        kk = ho * wp
        taps = np.empty(k, np.int64)
        for ci in range(c):
            for i in range(kh):
                for j in range(kw):
                    taps[(ci * kh + i) * kw + j] = (ci * hp + i * dh) * wp + j * dw
    else:
        hp, wp = 0, wo
        kk = ho * wo
        taps = _rows(k, kk)
    grows = _rows(o, kk)
    for worker in numba.prange(workers):
        b = fetch_add(taken)
        if b >= nb:  # its accumulator stays zero
            continue
        if padded:
            xp = np.zeros(c * hp * wp + wp, x.dtype)  # + one row of slack for the last window
            gp = np.zeros(o * kk, g.dtype)
            image = xp[:c * hp * wp].reshape((c, hp, wp))
            cols = xp[:0].reshape((0, kk))
        else:
            xp = np.empty(k * kk, x.dtype)  # the im2col matrix (k, Ho*Wo)
            gp = np.empty(0, g.dtype)
            image = xp[:0].reshape((c, 0, wo))
            cols = xp.reshape((k, kk))
        while b < nb:
            if padded:
                _padded(x[b], image, loh, low)
                for oo in range(o):
                    for y in range(ho):
                        _copy(gp[oo * kk + y * wp:], g[b, oo, y], wo, 1)
                rows = gp
            else:
                _im2col_rows(x[b], cols, kh, kw, sh, sw, loh, low, dh, dw, ho, wo)
                rows = g[b].reshape(-1)
            _gemm_nt(rows, grows, xp, taps, kk, accs[worker])
            b = fetch_add(taken)
    acc = accs[0]
    for worker in range(1, workers):
        acc += accs[worker]
    for ci in range(c):
        for oo in range(o):
            for t in range(kh * kw):
                out[ci, oo, t // kw, t % kw] = acc[oo, ci * kh * kw + t]
