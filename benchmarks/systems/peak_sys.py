"""Not a competitor: the machine's peak, timed in the same rounds as the systems.

The bound of a workload is the time its work takes at the machine's peak: its matmul FLOPs at
the float32 matmul rate of np.dot on 1024x1024 matrices, or (for the bandwidth-bound chain) its
bytes at np.copyto's copy bandwidth. The burst bound (run.py, best of short measurements between
workloads) compares with a step's best time; this pseudo-system times that same unit of work as
one more worker in the rounds, so its median is taken under the conditions the steps' medians
were (a busy host, a slower clock), and the median step can be held against it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from benchmarks.systems import Step
from benchmarks.workloads import WORKLOADS

MATMUL_N = 1024
COPY_BYTES = 64 * 1024 * 1024
UNIT_WORK = {"flops": 2.0 * MATMUL_N**3, "bytes": 2.0 * COPY_BYTES}  # one run of make_step's


def matmul_unit() -> tuple[Callable[[], None], float]:
    """(run, FLOPs of one run): np.dot of two MATMUL_N x MATMUL_N float32 matrices."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((MATMUL_N, MATMUL_N)).astype(np.float32)
    b = rng.standard_normal((MATMUL_N, MATMUL_N)).astype(np.float32)
    c = np.empty((MATMUL_N, MATMUL_N), np.float32)
    return (lambda: np.dot(a, b, out=c)), UNIT_WORK["flops"]


def copy_unit(nbytes: int = COPY_BYTES) -> tuple[Callable[[], None], float]:
    """(run, bytes one run moves): np.copyto of `nbytes` of float32 (read + write)."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    return (lambda: np.copyto(dst, src)), 2.0 * src.nbytes


def unit_kind(workload: str) -> str:
    """"flops" (the matmul unit) or "bytes" (the copy unit): what the peak times for it."""
    return "flops" if WORKLOADS[workload].flops > 0 else "bytes"


def make_step(workload: str, data: dict, params: dict) -> Step:
    unit, _ = matmul_unit() if unit_kind(workload) == "flops" else copy_unit()

    def run():
        unit()
        return 0.0

    return Step(run=run, value_and_grad=None)
