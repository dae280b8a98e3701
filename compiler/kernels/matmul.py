"""Matmuls on Numba's threads, for drivers that run all their work on one thread pool.

A driver whose loop kernels run on Numba's threads calls its matmuls here instead of `np.dot`, with
BLAS held to one thread (runtime/execution/blas.py): each thread calls single-threaded BLAS on a
block of the output. Two pools in one driver are what this avoids: OpenBLAS's threads and Numba's
both busy-wait after a job, and on 2 cores each pool's work ran against the other's spinning threads
(the transformer step with its loop kernels on Numba's threads beside OpenBLAS's matmuls: 109 ms
instead of 38).

- `matmul_<dtype>(a, b, out, alpha, beta)`: out (M, N) = alpha a (M, K) @ b (K, N) + beta
  out (a plain product is alpha 1, beta 0; an SGD update accumulates into the weights,
  compiler/passes/gemm_epilogue.py); `matmul_any_<dtype>` where alpha may be 0 (a run-time
  rate). The rows (or, when N > M, the columns) of out are cut into one block per thread.
- `matmul_batched_<dtype>(a, ta, b, tb, out)`: out[i] = op(a[i]) @ op(b[i]) for each i of a
  batch (op transposes when its flag is set); each thread takes whole batch items.

Each entry is compiled for its one dtype when its name is first imported (module
`__getattr__`), so a model compiles only the entries it calls.

Blocks are taken from an atomic counter, not split statically: with a core taken by another
process, the running thread takes the late one's blocks (see compiler/kernels/conv.py). Each
block is one BLAS call on the operands' data in place (compiler/kernels/blas.py), so nothing
is copied.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.core import types

from compiler.kernels.blas import FLOATS, gemm, gemm_any, load_blas_functions, operand, signatures
from compiler.kernels.parallel import fetch_add, launch_thread_pool, parallel_options

launch_thread_pool()  # which registers `get_num_threads`
load_blas_functions()  # before any thread of a parallel region calls BLAS
# declared as Numba's parfor lowering declares it (intp), as both may sit in one LLVM module
_num_threads = types.ExternalFunction("get_num_threads", types.intp())
# A block of less than this many multiply-adds is not split further (thread start-up and a
# BLAS call cost more than they save).
MIN_BLOCK = 2**18

_JIT = {"cache": True, "error_model": "numpy"}


@numba.njit(**_JIT)
def _blocks(work, units):
    """How many blocks `units` rows (or columns) of `work` multiply-adds are cut into: one
    per thread, fewer when a block would be smaller than MIN_BLOCK."""
    return max(1, min(_num_threads(), units, work // MIN_BLOCK))


def _matmul(a, b, out, alpha, beta):
    """out (M, N) = alpha a (M, K) @ b (K, N) + beta out, alpha nonzero; the longer of M and N
    cut into one block per thread."""
    m, n, k = a.shape[0], b.shape[1], a.shape[1]
    rows = m >= n
    blocks = _blocks(m * n * k, m if rows else n)
    if blocks == 1:
        gemm(a, b, out, alpha, beta)
        return
    taken = np.zeros(1, np.int64)
    for _ in numba.prange(blocks):
        t = fetch_add(taken)
        while t < blocks:
            if rows:
                lo, hi = t * m // blocks, (t + 1) * m // blocks
                gemm(a[lo:hi], b, out[lo:hi], alpha, beta)
            else:
                lo, hi = t * n // blocks, (t + 1) * n // blocks
                gemm(a, b[:, lo:hi], out[:, lo:hi], alpha, beta)
            t = fetch_add(taken)


def _matmul_any(a, b, out, alpha, beta):
    """`_matmul` for an alpha that may be 0 (a run-time rate): compiler/kernels/blas.gemm_any."""
    m, n, k = a.shape[0], b.shape[1], a.shape[1]
    rows = m >= n
    blocks = _blocks(m * n * k, m if rows else n)
    if blocks == 1:
        gemm_any(a, b, out, alpha, beta)
        return
    taken = np.zeros(1, np.int64)
    for _ in numba.prange(blocks):
        t = fetch_add(taken)
        while t < blocks:
            if rows:
                lo, hi = t * m // blocks, (t + 1) * m // blocks
                gemm_any(a[lo:hi], b, out[lo:hi], alpha, beta)
            else:
                lo, hi = t * n // blocks, (t + 1) * n // blocks
                gemm_any(a, b[:, lo:hi], out[:, lo:hi], alpha, beta)
            t = fetch_add(taken)


def _matmul_batched(a, ta, b, tb, out):
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
            gemm(x, y, out[t], 1.0, 0.0)
            t = fetch_add(taken)


# entry name -> (Python function, signature for one float dtype). Each entry is compiled for
# the one dtype its name says, on first import of that name (a float32 model compiles no
# float64 kernels: each of these took 3-6 s to compile).
_ENTRIES = {
    "matmul": (_matmul, lambda t: signatures(types.float64, types.float64)[FLOATS.index(t)]),
    "matmul_any": (_matmul_any,
                   lambda t: signatures(types.float64, types.float64)[FLOATS.index(t)]),
    "matmul_batched": (_matmul_batched, lambda t: types.void(
        operand(t, 3), types.boolean, operand(t, 3), types.boolean, t[:, :, :])),
}
_DTYPES = {"f32": numba.float32, "f64": numba.float64}


def entry_name(kind: str, dtype_tag: str) -> str:
    """The importable name of an entry for a dtype: `matmul_f32`, `matmul_batched_f64`."""
    return f"{kind}_{dtype_tag}"


def __getattr__(name: str):
    kind, _, tag = name.rpartition("_")
    if kind not in _ENTRIES or tag not in _DTYPES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    fn, signature = _ENTRIES[kind]
    dispatcher = numba.njit([signature(_DTYPES[tag])], parallel=parallel_options(), **_JIT)(fn)
    globals()[name] = dispatcher
    return dispatcher
