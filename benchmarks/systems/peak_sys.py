"""Not a competitor: the machine's peak, timed in the same rounds as the systems.

The bound of a workload is the time its work takes at the machine's peak: its matmul FLOPs at
the float32 matmul rate of np.dot on 1024x1024 matrices, or (for the bandwidth-bound chain) its
bytes at np.copyto's copy bandwidth. The burst bound (run.py, best of short measurements between
workloads) compares with a step's best time; this pseudo-system times that same unit of work as
one more worker in the rounds, so its median is taken under the conditions the steps' medians
were (a busy host, a slower clock), and the median step can be held against it.
"""

from __future__ import annotations

import numpy as np

from benchmarks.systems import Step
from benchmarks.workloads import WORKLOADS

MATMUL_N = 1024
COPY_BYTES = 64 * 1024 * 1024


def unit_work(workload: str) -> tuple[str, float]:
    """("flops" or "bytes", how much of it one `run` does) for workload's bound."""
    if WORKLOADS[workload].flops > 0:
        return "flops", 2.0 * MATMUL_N**3
    return "bytes", 2.0 * COPY_BYTES  # read + write


def make_step(workload: str, data: dict, params: dict) -> Step:
    kind, _ = unit_work(workload)
    if kind == "flops":
        rng = np.random.default_rng(0)
        a = rng.standard_normal((MATMUL_N, MATMUL_N)).astype(np.float32)
        b = rng.standard_normal((MATMUL_N, MATMUL_N)).astype(np.float32)
        c = np.empty((MATMUL_N, MATMUL_N), np.float32)

        def run():
            np.dot(a, b, out=c)
            return 0.0
    else:
        src = np.ones(COPY_BYTES // 4, np.float32)
        dst = np.empty_like(src)

        def run():
            np.copyto(dst, src)
            return 0.0

    return Step(run=run, value_and_grad=None)
