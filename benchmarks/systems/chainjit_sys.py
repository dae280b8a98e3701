"""chainjit: the user-style losses of ``workloads.make_loss`` through the public API.

Assumed API (from the design doc)::

    from compiler import compile, value_and_grad, nn
    from runtime import optim, train_step
    value, grads = compile(value_and_grad(loss))(params, *data)   # grads: params' structure
    step = train_step(loss, optim.SGD(lr), wait=True)               # or optim.Adam(lr)
    loss_value = step(params, *data)                                # updates params in place

``wait`` (default True): the step's first call waits for the compiled code, so a worker's
checks and timed steps, and the compile-latency rows, measure compiled code. ``wait=False``
is chainjit's default path (first calls answered by the reference interpreter while the step
compiles in the background): only the compile_latency ``first_result`` row uses it, which
also times ``backend="interpreter"`` (the reference interpreter with no compile running).

Any exception during setup or the first call is reported by the harness as ``error: ...``.
"""

from __future__ import annotations

import numpy as np

from benchmarks.systems import Step
from benchmarks.workloads import ADAM_LR, SGD_LR, WORKLOADS, make_loss
from compiler import compile, nn, value_and_grad
from runtime import optim, train_step

DATA_ARGS = {
    "mlp_large": ("x", "y"),
    "mlp_small": ("x", "y"),
    "cnn": ("x", "y"),
    "transformer": ("x", "y"),  # the causal mask is a constant inside the loss
}


def _np_grads(grads, keys):
    if isinstance(grads, (tuple, list)) and grads and isinstance(grads[0], dict):
        grads = grads[0]  # gradients of every argument: keep the params'
    if isinstance(grads, dict):
        return {k: np.asarray(grads[k]) for k in keys}
    raise TypeError(f"expected a dict of gradients, got {type(grads).__name__}")


def make_step(workload: str, data: dict, params: dict, activation: str = "relu",
              wait: bool = True, backend: str | None = None) -> Step:
    kind = WORKLOADS[workload].kind
    loss = make_loss(workload, nn, activation)
    if kind == "grad":
        f = compile(value_and_grad(loss), wait=wait)
        x = data["x"]

        def vg():
            value, g = f(x)
            if isinstance(g, (tuple, list)):  # grad w.r.t. the only argument
                g = g[0]
            return float(value), {"x": np.asarray(g)}

        return Step(run=lambda: vg()[0], value_and_grad=vg)

    args = tuple(data[k] for k in DATA_ARGS[workload])
    vg_fn = compile(value_and_grad(loss))
    opt = optim.SGD(SGD_LR) if kind == "sgd" else optim.Adam(ADAM_LR)
    step = train_step(loss, opt, wait=wait, backend=backend)

    def run():
        return float(step(params, *args))

    def vg():
        value, grads = vg_fn(params, *args)
        return float(value), _np_grads(grads, params.keys())

    def get_params():
        return {k: np.asarray(v) for k, v in params.items()}

    return Step(run=run, value_and_grad=vg, get_params=get_params, handle=step)
