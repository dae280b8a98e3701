"""NumPy eager baseline: the hand-written backward of ``reference.py`` run in float32."""

from __future__ import annotations

from benchmarks import reference as ref
from benchmarks.systems import Step
from benchmarks.workloads import ADAM_LR, SGD_LR, WORKLOADS, check_activation


def make_step(workload: str, data: dict, params: dict, activation: str = "relu") -> Step:
    check_activation(workload, activation)
    kind = WORKLOADS[workload].kind

    def vg(params, data):
        return ref.value_and_grad(workload, params, data, activation)


    def value_and_grad():
        loss, grads = vg(params, data)
        return float(loss), grads

    if kind == "grad":
        return Step(run=lambda: float(vg(params, data)[0]), value_and_grad=value_and_grad)

    if kind == "sgd":

        def run():
            loss, grads = vg(params, data)
            ref.sgd_update(params, grads, SGD_LR)
            return float(loss)

    else:
        opt = ref.Adam(params, ADAM_LR)

        def run():
            loss, grads = vg(params, data)
            opt.update(params, grads)
            return float(loss)

    return Step(run=run, value_and_grad=value_and_grad, get_params=lambda: params)
