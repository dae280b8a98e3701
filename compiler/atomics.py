"""An atomic counter for Numba kernels: dynamic scheduling of a `prange` over workers.

A `numba.prange` splits its iterations between threads up front. When another process holds
one core, the thread on it starts late and the whole parallel region waits for its share (a
convolution step went from 16 to 64 ms that way). With one prange iteration per worker and
the work items handed out by `fetch_add` on a shared counter, the thread that runs takes the
items the late one has not started:

    counter = np.zeros(1, np.int64)
    for worker in numba.prange(workers):
        while True:
            item = fetch_add(counter)
            if item >= items:
                break
            ...
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic


@intrinsic
def fetch_add(typingctx, counter):
    """`counter[0] += 1` as one atomic step (an LLVM `atomicrmw add`); returns the value
    before the add. `counter` is a 1-d int64 array shared by the threads."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64
            and counter.ndim == 1):
        return None
    sig = types.int64(counter)

    def codegen(context, builder, sig, args):
        array = context.make_array(sig.args[0])(context, builder, args[0])
        one = context.get_constant(types.int64, 1)
        # monotonic: only the counter itself must be consistent; each item's data is
        # written by the one thread that took it and read after the region's barrier
        return builder.atomic_rmw("add", array.data, one, "monotonic")

    return sig, codegen
