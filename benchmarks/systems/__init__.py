"""Per-system adapters. Each module exposes ``make_step(workload, data, params) -> Step``.

``data`` and ``params`` are fresh float32 NumPy copies owned by the adapter; it may convert them
to its own arrays. A training step updates the adapter's parameters (as the system normally
does: in place for NumPy/PyTorch/chainjit, by rebinding for JAX).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

PEAK = "peak"
MODULES = {
    "numpy": "benchmarks.systems.numpy_sys",
    "jax": "benchmarks.systems.jax_sys",
    "torch": "benchmarks.systems.torch_sys",
    "chainjit": "benchmarks.systems.chainjit_sys",
    "torch_compile": "benchmarks.systems.torch_compile_sys",  # torch.compile (not in ORDER)
    PEAK: "benchmarks.systems.peak_sys",  # the machine's peak, timed alongside (not a system)
}
ORDER = ["numpy", "jax", "torch", "chainjit"]  # the default systems of the timed workloads
EXTRA = ["torch_compile"]  # timed only when named in --systems; compile_latency's "torch"


@dataclass
class Step:
    """One system's step for one workload.

    run: one step (value+grad for ``chain``; a full training step otherwise), blocking until
        the result is computed; returns the loss as a float.
    value_and_grad: loss and gradients at the current params (no update), as NumPy arrays;
        used only for the correctness check (None: nothing to check, the peak pseudo-system).
    get_params: current params as NumPy arrays (training workloads), else None.
    handle: the system's own step object, for a harness that looks inside (chainjit's
        TrainStep in the compile_latency first_result child), else None.
    """

    run: Callable[[], float]
    value_and_grad: Callable[[], tuple[float, dict]] | None
    get_params: Callable[[], dict] | None = None
    handle: object = None


def load(name: str):
    """Import the adapter module of system ``name``. Every adapter's ``make_step`` also takes
    ``activation="relu"`` ("tanh": compile_latency's edit of the MLPs and the CNN).

    Raises ImportError if its library is absent.
    """
    return importlib.import_module(MODULES[name])
