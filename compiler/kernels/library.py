"""Numba kernels for the library ops (ir/ops.py's LIBRARY group), compiled once per dtype and
cached on disk, called by generated drivers (compiler/codegen/extra_ops.py emits one call per
node, `from compiler.kernels.library import ...` in the kernel module that calls it).

Every kernel takes C-contiguous arrays with the batch dims flattened into the first axis,
and writes its result into `out`. LAPACK comes through Numba's `np.linalg` (SciPy's LAPACK),
one matrix at a time; a singular matrix (solve) or one that is not positive definite
(cholesky) raises `np.linalg.LinAlgError`, as NumPy does.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"cache": True, "error_model": "numpy"}


@numba.njit(**_JIT)
def argsort_rows(x, out):
    """out[r] = the stable argsort of x[r], for x (rows, n); NaNs sort last, as NumPy."""
    for r in range(x.shape[0]):
        out[r] = np.argsort(x[r], kind="mergesort")


@numba.njit(**_JIT)
def solve_batched(a, b, out):
    """out[i] = solve(a[i], b[i]) for a (batch, n, n), b (batch, n, k)."""
    for i in range(a.shape[0]):
        out[i] = np.linalg.solve(a[i], b[i])


@numba.njit(**_JIT)
def slogdet_batched(a, out):
    """out[i] = (sign, log|det|) of a[i], for a (batch, n, n), out (batch, 2)."""
    for i in range(a.shape[0]):
        sign, logabsdet = np.linalg.slogdet(a[i])
        out[i, 0] = sign
        out[i, 1] = logabsdet


@numba.njit(**_JIT)
def cholesky_batched(a, out):
    """out[i] = the lower Cholesky factor of a[i] (its lower triangle is read)."""
    for i in range(a.shape[0]):
        out[i] = np.linalg.cholesky(a[i])
