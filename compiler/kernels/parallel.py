"""What chainjit's threaded code shares: the parfor options of its prange loops, the launch of
Numba's thread pool, and the atomic counter its threaded kernels hand work out with.

Used by the generated drivers (compiler/codegen/loops.py renders `parallel_options()` into their
decorator) and by the cached kernel modules (compiler/kernels/conv.py,
compiler/kernels/matmul.py). Numba's disk cache of a kernel module checks only that module's
own file, so machine code built with `fetch_add` is not rebuilt when this file changes: after
changing it, touch the kernel modules (or clear `compiler/__pycache__`). Generated drivers do
not have this problem: their imports carry a hash of every chainjit module the kernels import
(compiler/codegen/driver.py, `kernel_source_hash`).
"""

from __future__ import annotations

import numba
from numba.core import types
from numba.core.extending import intrinsic


def parallel_options() -> dict[str, bool]:
    """numba.njit(parallel=...): only prange loops become parfors (the other parfor
    conversions analyse the whole function, costing compile time for nothing: every loop is
    written out). A new dict each time: Numba empties the one it is given."""
    return {"prange": True, "comprehension": False, "reduction": False, "setitem": False,
            "numpy": False, "stencil": False, "fusion": False, "inplace_binop": False}


def launch_thread_pool() -> None:
    """Launch Numba's thread pool now. A kernel module calls this when it is imported, which
    generated code does before its driver is loaded: a driver loaded from the disk cache with
    parallel kernels linked in does not launch it itself (only a function with its own prange
    loop records that it must), and its first parallel region would crash. The launch also
    registers the `get_num_threads` symbol compiled code may call."""
    numba.get_num_threads()


@intrinsic
def fetch_add(typingctx, counter):
    """`counter[0] += 1` as one atomic step (an LLVM `atomicrmw add`), returning the value
    before the add: the next piece of work (an image, a block) for the thread that calls it.
    `counter` is a 1-d int64 array shared by the threads."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64
            and counter.ndim == 1):
        return None
    sig = types.int64(counter)

    def codegen(context, builder, sig, args):
        array = context.make_array(sig.args[0])(context, builder, args[0])
        one = context.get_constant(types.int64, 1)
        # monotonic: only the counter must be consistent; each piece's data is written by
        # the one thread that took it and read after the parallel region's barrier
        return builder.atomic_rmw("add", array.data, one, "monotonic")

    return sig, codegen
