"""One BLAS matrix product from Numba code: out = alpha a @ b + beta out.

`np.dot` inside `@njit` has no alpha or beta, and no way to call BLAS from a thread of a
parallel region. These call Numba's own `numba_xxgemm` (the BLAS that `np.dot` calls,
SciPy's) through an `ExternalFunction`, on the operands' data in place: C arrays and
transposes of them (F order), row slices and column blocks, as `np.dot` takes them.

- `gemm(a, b, out, alpha, beta)`: one call on BLAS's own threads, for drivers that leave
  threads to BLAS (an SGD update accumulated into its weights, compiler/passes/gemm_epilogue.py).
- `gemm_on_this_thread(...)`: the same call, made by whichever thread runs it; the threaded
  kernels of compiler/kernels/matmul.py call it on blocks of a product, with BLAS held to one
  thread (runtime/blas.py).

Both keep NaNs as the sum would: with alpha 0, where BLAS skips the product, the product is
still computed, so that 0 (a @ b) is NaN where a @ b is (a learning-rate schedule can reach 0,
and codegen passes the rate in alpha).

A small module on purpose: a driver that imports `gemm` does not compile the threaded kernels
(about 12 s on a cold cache). Numba's disk cache of compiler/kernels/matmul.py checks only its
own file: after changing this one, touch it (see compiler/kernels/parallel.py).
"""

from __future__ import annotations

import numba
import numpy as np
from numba.core import types

# Numba's BLAS entry point, declared as `np.dot`'s lowering declares it (untyped pointers), so
# one declaration serves every kind ('s', 'd'):
# (kind, transa, transb, m, n, k, alpha*, a*, lda, b*, ldb, beta*, c*, ldc) -> status
_XXGEMM = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,
    types.voidptr, types.voidptr, types.intp, types.voidptr, types.intp,
    types.voidptr, types.voidptr, types.intp))

_JIT = {"cache": True, "error_model": "numpy"}
# Operands of any layout and read-only ('A': C arrays and transposes of them convert, and so do
# writable arrays), so each entry is compiled once per dtype, when its module is first imported,
# and loaded from the disk cache after that.
FLOATS = (numba.float32, numba.float64)


def operand(dtype, ndim):
    return types.Array(dtype, ndim, "A", readonly=True)


def signatures(*extra):
    """(a, b, out, *extra) -> None for each float dtype."""
    return [types.void(operand(t, 2), operand(t, 2), t[:, :], *extra) for t in FLOATS]


@numba.njit(inline="always", **_JIT)
def _blas_view(a):
    """(trans, ld) of a row-major 2-D operand for a column-major BLAS: a C array is read as
    is ('N'), the transpose of one ('T') with the C array's row length as its ld."""
    size = a.itemsize
    if a.strides[1] == size or a.shape[1] <= 1:
        return ord("N"), max(a.strides[0] // size, a.shape[1], 1)
    return ord("T"), max(a.strides[1] // size, a.shape[0], 1)


@numba.njit(**_JIT)
def gemm_on_this_thread(a, b, out, alpha, beta):
    """out = alpha a @ b + beta out, by the calling thread's BLAS."""
    m, k = a.shape
    n = b.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:  # as BLAS: beta 0 overwrites out (a NaN in it too)
        for i in range(m):
            for j in range(n):
                out[i, j] = out[i, j] * beta if beta != 0 else 0
        return
    if alpha == 0:  # BLAS would skip the product, but 0 (a @ b) is NaN where a @ b is not
        product = np.empty((m, n), out.dtype)  # finite (a learning rate that reaches 0)
        _call(a, b, product, 1.0, 0.0)
        for i in range(m):
            for j in range(n):
                out[i, j] = (out[i, j] * beta if beta != 0 else 0) + alpha * product[i, j]
        return
    _call(a, b, out, alpha, beta)


@numba.njit(**_JIT)
def _call(a, b, out, alpha, beta):
    """The BLAS call for `gemm_on_this_thread` (m, n, k > 0). Row-major out = a @ b is
    column-major outᵀ = bᵀ @ aᵀ, so b goes first."""
    m, k = a.shape
    n = b.shape[1]
    # Operands or an output without unit stride (codegen passes none of these) are copied.
    # The copies are loops: np.ascontiguousarray and slice assignment here took ~8 s of this
    # module's compile time.
    if not _blas_readable(a):
        a = _copy(a)
    if not _blas_readable(b):
        b = _copy(b)
    staged = out.strides[1] != out.itemsize and n > 1
    c = _copy(out) if staged else out
    ta, lda = _blas_view(a)
    tb, ldb = _blas_view(b)
    ldc = max(c.strides[0] // c.itemsize, n, 1)
    kind = ord("s") if c.itemsize == 4 else ord("d")
    alpha_beta = np.array([alpha, beta], c.dtype)
    _XXGEMM(kind, tb, ta, n, m, k, alpha_beta[0:].ctypes, b.ctypes, ldb, a.ctypes, lda,
            alpha_beta[1:].ctypes, c.ctypes, ldc)
    if staged:
        for i in range(m):
            for j in range(n):
                out[i, j] = c[i, j]


@numba.njit(**_JIT)
def _copy(a):
    """A C-order copy of a 2-D array."""
    c = np.empty(a.shape, a.dtype)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            c[i, j] = a[i, j]
    return c


@numba.njit(inline="always", **_JIT)
def _blas_readable(a):
    """BLAS reads a 2-D operand in place when one of its axes has unit stride."""
    return a.strides[1] == a.itemsize or a.strides[0] == a.itemsize or a.shape[1] <= 1


@numba.njit(signatures(types.float64, types.float64), **_JIT)
def gemm(a, b, out, alpha, beta):
    """out = alpha a @ b + beta out as one BLAS call (on BLAS's threads)."""
    gemm_on_this_thread(a, b, out, alpha, beta)


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
