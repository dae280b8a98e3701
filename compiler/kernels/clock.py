"""A clock compiled code can read between two calls: the CPU's time-stamp counter.

`clock()` is LLVM's `llvm.readcyclecounter` (RDTSC on x86), a few nanoseconds and no call,
so a driver the profiler instruments (compiler/codegen/profile.py) can bracket every kernel
call with it and not disturb what it times. On CPUs with an invariant counter (x86's
`constant_tsc`/`nonstop_tsc`, every x86-64 of the last decade) it ticks at a fixed rate
whatever the core's clock does; `ticks_per_second()` measures that rate once per process
against `time.perf_counter_ns`. Where LLVM has no cycle counter the intrinsic reads 0, and
`ticks_per_second` says so (None).
"""

from __future__ import annotations

import functools
import time

import numba
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic


@intrinsic
def clock(typingctx):
    """The time-stamp counter, as an int64 (ticks; see `ticks_per_second`)."""
    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.readcyclecounter")
        return builder.call(fn, [])

    return types.int64(), codegen


@numba.njit(cache=True)
def read_clock():
    """`clock()` from Python (for calibration and tests)."""
    return clock()


@functools.lru_cache(maxsize=1)
def ticks_per_second() -> float | None:
    """The counter's rate, measured against `time.perf_counter_ns` over about 60 ms (best
    of three 20 ms windows, each bracketed tightly); None when the counter does not run."""
    read_clock()  # compiled or loaded before anything is timed
    rates = []
    for _ in range(3):
        t0, c0 = time.perf_counter_ns(), read_clock()
        time.sleep(0.02)
        c1, t1 = read_clock(), time.perf_counter_ns()
        if c1 <= c0:
            return None
        rates.append((c1 - c0) / (t1 - t0) * 1e9)
    return sorted(rates)[1]


class _PythonCallable(type(clock)):
    """Callable from Python too (nanoseconds of `time.perf_counter_ns`, not ticks): an
    instrumented driver run as plain Python still runs."""

    def __call__(self):
        return time.perf_counter_ns()


clock.__class__ = _PythonCallable
clock.__module__ = __name__
