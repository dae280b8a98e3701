"""Matmuls on Numba's threads, for drivers that run all their work on one thread pool.

A driver whose loop kernels run on Numba's threads calls its matmuls here instead of
`np.dot`, with BLAS held to one thread (runtime/blas.py): each thread calls single-threaded
BLAS on a block of the output. Two pools in one driver are what this avoids: OpenBLAS's
threads and Numba's both busy-wait after a job, and on 2 cores each pool's work ran against
the other's spinning threads (the transformer step with its loop kernels on Numba's threads
beside OpenBLAS's matmuls: 109 ms instead of 38).

- `matmul(a, b, out, alpha, beta)`: out (M, N) = alpha a (M, K) @ b (K, N) + beta out (a
  plain product is alpha 1, beta 0; an SGD update accumulates into the weights,
  compiler/passes/gemm_epilogue.py). The rows (or, when N > M, the columns) of out are cut
  into one block per thread.
- `matmul_batched(a, ta, b, tb, out)`: out[i] = op(a[i]) @ op(b[i]) for each i of a batch
  (op transposes when its flag is set); each thread takes whole batch items.
- `gemm(a, b, out, alpha, beta)`: `matmul`'s product as one call on BLAS's own threads, for
  drivers that leave threads to BLAS (np.dot has no alpha or beta).

Blocks are taken from an atomic counter, not split statically: with a core taken by another
process, the running thread takes the late one's blocks (see compiler/conv_kernels.py).
Operands may be C arrays or transposes of C arrays (F order), as `np.dot` takes them; the
BLAS call is made on their data in place, through Numba's own `numba_xxgemm` (the BLAS that
`np.dot` calls, SciPy's), so nothing is copied.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.core import types

from compiler.parallel import fetch_add, launch_thread_pool, parallel_options

launch_thread_pool()  # which registers `get_num_threads`
# declared as Numba's parfor lowering declares it (intp), as both may sit in one LLVM module
_num_threads = types.ExternalFunction("get_num_threads", types.intp())
# Numba's BLAS entry point, declared as `np.dot`'s lowering declares it (untyped pointers), so
# one declaration serves every kind ('s', 'd'):
# (kind, transa, transb, m, n, k, alpha*, a*, lda, b*, ldb, beta*, c*, ldc) -> status
_XXGEMM = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,
    types.voidptr, types.voidptr, types.intp, types.voidptr, types.intp,
    types.voidptr, types.voidptr, types.intp))
# A block of less than this many multiply-adds is not split further (thread start-up and a
# BLAS call cost more than they save).
MIN_BLOCK = 2**18

_JIT = {"cache": True, "error_model": "numpy"}


@numba.njit(inline="always", **_JIT)
def _blas_view(a):
    """(trans, ld) of a row-major 2-D operand for a column-major BLAS: a C array is read as
    is ('N'), the transpose of one ('T') with the C array's row length as its ld."""
    size = a.itemsize
    if a.strides[1] == size or a.shape[1] <= 1:
        return ord("N"), max(a.strides[0] // size, a.shape[1], 1)
    return ord("T"), max(a.strides[1] // size, a.shape[0], 1)


@numba.njit(**_JIT)
def _gemm(a, b, out, alpha, beta):
    """out = alpha a @ b + beta out, by the calling thread's BLAS. Row-major out = a @ b is
    column-major outᵀ = bᵀ @ aᵀ, so b goes first."""
    m, k = a.shape
    n = b.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:  # as BLAS: beta 0 overwrites out (a NaN in it too)
        for i in range(m):
            for j in range(n):
                out[i, j] = out[i, j] * beta if beta != 0 else 0
        return
    if not _blas_readable(a):  # no unit stride (codegen passes none of these)
        a = np.ascontiguousarray(a)
    if not _blas_readable(b):
        b = np.ascontiguousarray(b)
    staged = out.strides[1] != out.itemsize and n > 1
    c = np.ascontiguousarray(out) if staged else out
    ta, lda = _blas_view(a)
    tb, ldb = _blas_view(b)
    ldc = max(c.strides[0] // c.itemsize, n, 1)
    kind = ord("s") if c.itemsize == 4 else ord("d")
    alpha_beta = np.array([alpha, beta], c.dtype)
    _XXGEMM(kind, tb, ta, n, m, k, alpha_beta[0:].ctypes, b.ctypes, ldb, a.ctypes, lda,
            alpha_beta[1:].ctypes, c.ctypes, ldc)
    if staged:
        out[:] = c


@numba.njit(inline="always", **_JIT)
def _blas_readable(a):
    """BLAS reads a 2-D operand in place when one of its axes has unit stride."""
    return a.strides[1] == a.itemsize or a.strides[0] == a.itemsize or a.shape[1] <= 1


@numba.njit(**_JIT)
def _blocks(work, units):
    """How many blocks `units` rows (or columns) of `work` multiply-adds are cut into: one
    per thread, fewer when a block would be smaller than MIN_BLOCK."""
    return max(1, min(_num_threads(), units, work // MIN_BLOCK))


# Operands of any layout and read-only ('A': C arrays and transposes of them convert, and
# so do writable arrays), so each entry is compiled once per dtype, when this module is first
# imported, and loaded from the disk cache after that.
_FLOATS = (numba.float32, numba.float64)


def _operand(dtype, ndim):
    return types.Array(dtype, ndim, "A", readonly=True)


def _signatures(*extra):
    return [types.void(_operand(t, 2), _operand(t, 2), t[:, :], *extra) for t in _FLOATS]


@numba.njit(_signatures(types.float64, types.float64), parallel=parallel_options(), **_JIT)
def matmul(a, b, out, alpha, beta):
    """out (M, N) = alpha a (M, K) @ b (K, N) + beta out, the longer of M and N cut into one
    block per thread."""
    m, n, k = a.shape[0], b.shape[1], a.shape[1]
    rows = m >= n
    blocks = _blocks(m * n * k, m if rows else n)
    if blocks == 1:
        _gemm(a, b, out, alpha, beta)
        return
    taken = np.zeros(1, np.int64)
    for _ in numba.prange(blocks):
        t = fetch_add(taken)
        while t < blocks:
            if rows:
                lo, hi = t * m // blocks, (t + 1) * m // blocks
                _gemm(a[lo:hi], b, out[lo:hi], alpha, beta)
            else:
                lo, hi = t * n // blocks, (t + 1) * n // blocks
                _gemm(a, b[:, lo:hi], out[:, lo:hi], alpha, beta)
            t = fetch_add(taken)


@numba.njit(_signatures(types.float64, types.float64), **_JIT)
def gemm(a, b, out, alpha, beta):
    """out = alpha a @ b + beta out as one BLAS call (on BLAS's threads)."""
    _gemm(a, b, out, alpha, beta)


@numba.njit([types.void(_operand(t, 3), types.boolean, _operand(t, 3), types.boolean,
                        t[:, :, :]) for t in _FLOATS], parallel=parallel_options(), **_JIT)
def matmul_batched(a, ta, b, tb, out):
    """out[i] = op(a[i]) @ op(b[i]) for each i of the batch, where op(x) is x.T when its flag
    is set; each thread takes whole batch items."""
    batch = out.shape[0]
    workers = max(1, min(_num_threads(), batch))
    taken = np.zeros(1, np.int64)
    for _ in numba.prange(workers):
        t = fetch_add(taken)
        while t < batch:
            x = a[t].T if ta else a[t]
            y = b[t].T if tb else b[t]
            _gemm(x, y, out[t], 1.0, 0.0)
            t = fetch_add(taken)


@numba.njit(**_JIT)
def _load_blas_functions():
    """Numba finds SciPy's sgemm/dgemm on its first call of each, under the GIL. A thread of
    a parallel region cannot take the GIL (the calling thread holds it, waiting in the
    region), so the first calls are made here, on import, with empty products."""
    x = np.zeros(1, np.float64)
    for kind in (ord("s"), ord("d")):
        _XXGEMM(kind, ord("N"), ord("N"), 0, 0, 0, x.ctypes, x.ctypes, 1, x.ctypes, 1,
                x.ctypes, x.ctypes, 1)


_load_blas_functions()
