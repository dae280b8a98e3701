"""PyTorch with ``torch.compile`` (Inductor, the default mode) on the CPU: the losses of
``torch_sys`` compiled, forward and backward, and the optimizer step compiled too.

Inductor's caches (its FX graph and AOTAutograd caches and the compiled C++ kernels) live in
``TORCHINDUCTOR_CACHE_DIR`` (Triton's, unused on the CPU, in ``TRITON_CACHE_DIR``): the
compile_latency harness points both at a fresh folder for a cold run.
"""

from __future__ import annotations

from benchmarks.systems import torch_sys


def make_step(workload: str, data: dict, params: dict, activation: str = "relu"):
    return torch_sys.make_step(workload, data, params, activation, compiled=True)
