"""One BLAS matrix product from Numba code: out = alpha a @ b + beta out.

`np.dot` inside `@njit` has no alpha or beta, and no way to call BLAS from a thread of a
parallel region. These call Numba's own `numba_xxgemm` (the BLAS that `np.dot` calls,
SciPy's) through an `ExternalFunction`, on the operands' data in place: C arrays and
transposes of them (F order), row slices and column blocks, as `np.dot` takes them.

- `gemm(a, b, out, alpha, beta)`: one BLAS call, alpha a nonzero constant (an SGD update
  accumulated into its weights, compiler/passes/gemm_epilogue.py). BLAS's own threads run it
  in a driver that leaves threads to BLAS; the threaded kernels of compiler/kernels/matmul.py
  call it from each of Numba's threads on a block, with BLAS held to one thread.
- `gemm_any(...)`: the same for an alpha known only at run time, which may be 0: it keeps
  NaNs as the sum would (where BLAS skips the product, the product is still computed, so
  that 0 (a @ b) is NaN where a @ b is; a learning-rate schedule can reach 0).

- `gemm_strided(...)`: for operands BLAS cannot read in place (copied first); generated code
  passes none.

The BLAS entry is called with raw pointers (`_data`, `_address_of`): Numba's `.ctypes`
objects and a 2-element alpha/beta array took most of this module's compile time.

A small module on purpose: a driver that imports `gemm` does not compile the threaded kernels
(about 12 s on a cold cache). Numba's disk cache of compiler/kernels/matmul.py checks only its
own file: after changing this one, touch it (see compiler/kernels/parallel.py).
"""

from __future__ import annotations

import numba
import numpy as np
from numba.core import cgutils, types
from numba.extending import intrinsic

# Numba's BLAS entry point, declared as `np.dot`'s lowering declares it (untyped pointers), so
# one declaration serves every kind ('s', 'd'):
# (kind, transa, transb, m, n, k, alpha*, a*, lda, b*, ldb, beta*, c*, ldc) -> status
_XXGEMM = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,
    types.voidptr, types.voidptr, types.intp, types.voidptr, types.intp,
    types.voidptr, types.voidptr, types.intp))
# BLAS's character arguments, as integers (ord() in Numba code compiles its unicode support)
_N, _T, _S, _D = 78, 84, 115, 100  # 'N', 'T', 's', 'd'

_JIT = {"cache": True, "error_model": "numpy"}
FLOATS = (numba.float32, numba.float64)


def operand(dtype, ndim):
    return types.Array(dtype, ndim, "A", readonly=True)


def signatures(*extra):
    """(a, b, out, *extra) -> None for each float dtype."""
    return [types.void(operand(t, 2), operand(t, 2), t[:, :], *extra) for t in FLOATS]


@intrinsic
def _data(typingctx, a):
    """The address of an array's first element (what `.ctypes` gives, without building the
    ctypes object: compiling that took most of this module's compile time)."""
    def codegen(context, builder, sig, args):
        array = cgutils.create_struct_proxy(sig.args[0])(context, builder, value=args[0])
        return builder.bitcast(array.data, cgutils.voidptr_t)

    return types.voidptr(a), codegen


@intrinsic
def _address_of(typingctx, value, dtype):
    """The address of a stack slot holding `value` cast to `dtype` (BLAS takes alpha and beta
    by reference); the slot lives as long as the calling function."""
    target = dtype.dtype

    def codegen(context, builder, sig, args):
        cast = context.cast(builder, args[0], sig.args[0], target)
        slot = cgutils.alloca_once_value(builder, cast)
        return builder.bitcast(slot, cgutils.voidptr_t)

    return types.voidptr(value, dtype), codegen


@numba.njit(inline="always", **_JIT)
def _blas_view(a):
    """(trans, ld) of a row-major 2-D operand for a column-major BLAS: a C array is read as
    is ('N'), the transpose of one ('T') with the C array's row length as its ld."""
    size = a.itemsize
    if a.strides[1] == size or a.shape[1] <= 1:
        ld = a.strides[0] // size
        return _N, ld if ld > a.shape[1] else (a.shape[1] if a.shape[1] > 1 else 1)
    ld = a.strides[1] // size
    return _T, ld if ld > a.shape[0] else (a.shape[0] if a.shape[0] > 1 else 1)


@numba.njit(**_JIT)
def gemm(a, b, out, alpha, beta):
    """out = alpha a @ b + beta out as one BLAS call, for a nonzero alpha (a constant rate:
    codegen never passes 0 here, see `gemm_any`)."""
    m, k = a.shape
    n = b.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:  # as BLAS: beta 0 overwrites out (a NaN in it too)
        for i in range(m):
            for j in range(n):
                out[i, j] = out[i, j] * beta if beta != 0 else 0
        return
    _call(a, b, out, alpha, beta)


@numba.njit(**_JIT)
def gemm_any(a, b, out, alpha, beta):
    """`gemm` for an alpha that may be 0 (a learning rate known only at run time): BLAS would
    skip a product scaled by 0, but 0 (a @ b) is NaN where a @ b is not finite, so then the
    product is computed into a temporary and added. (Its own function: the extra path costs
    about a second of compile time, which a constant rate does not pay.)"""
    m, k = a.shape
    n = b.shape[1]
    if alpha != 0 or m == 0 or n == 0 or k == 0:
        gemm(a, b, out, alpha, beta)
        return
    product = np.empty((m, n), out.dtype)
    _call(a, b, product, 1.0, 0.0)
    for i in range(m):
        for j in range(n):
            out[i, j] = (out[i, j] * beta if beta != 0 else 0) + alpha * product[i, j]


@numba.njit(**_JIT)
def _call(a, b, out, alpha, beta):
    """The BLAS call (m, n, k > 0). Row-major out = a @ b is column-major outᵀ = bᵀ @ aᵀ, so
    b goes first. Operands are C arrays or transposes of them (or row or column blocks of
    those) and out has a unit column stride: what codegen passes. Anything else raises;
    `gemm_strided` copies it first (the copies cost a second of compile time here)."""
    m, k = a.shape
    n = b.shape[1]
    if not (_blas_readable(a) and _blas_readable(b)) or (
            out.strides[1] != out.itemsize and n > 1):
        raise ValueError("chainjit: a BLAS operand without a unit stride (use gemm_strided)")
    ta, lda = _blas_view(a)
    tb, ldb = _blas_view(b)
    ldc = out.strides[0] // out.itemsize
    ldc = ldc if ldc > n else (n if n > 1 else 1)
    kind = _S if out.itemsize == 4 else _D
    _XXGEMM(kind, tb, ta, n, m, k, _address_of(alpha, out), _data(b), ldb, _data(a), lda,
            _address_of(beta, out), _data(out), ldc)


@numba.njit(**_JIT)
def gemm_strided(a, b, out, alpha, beta):
    """`gemm_any` for operands and an output of any strides: those BLAS cannot read in place
    are copied (loops: np.ascontiguousarray and slice assignment took ~8 s of compile)."""
    if not _blas_readable(a):
        a = _copy(a)
    if not _blas_readable(b):
        b = _copy(b)
    if out.strides[1] == out.itemsize or out.shape[1] <= 1:
        gemm_any(a, b, out, alpha, beta)
        return
    staged = _copy(out)
    gemm_any(a, b, staged, alpha, beta)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = staged[i, j]


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


@numba.njit(**_JIT)
def load_blas_functions():
    """Numba finds SciPy's sgemm/dgemm on its first call of each, under the GIL. A thread of
    a parallel region cannot take the GIL (the calling thread holds it, waiting in the
    region), so compiler/kernels/matmul.py, whose kernels call BLAS from such threads, makes
    the first calls on import, with empty products. (Not on this module's import: calling a
    dispatcher from Python refreshes Numba's registries, 0.65 s of a warm start.)"""
    x = np.zeros(1, np.float64)
    p = _data(x)
    for kind in (_S, _D):
        _XXGEMM(kind, _N, _N, 0, 0, 0, p, p, 1, p, 1, p, p, 1)
