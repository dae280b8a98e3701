"""PyTorch eager on the CPU: autograd + ``torch.optim`` (SGD / Adam), all cores."""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.workloads import (
    ADAM_BETAS,
    ADAM_EPS,
    ADAM_LR,
    CHAIN_A,
    CHAIN_B,
    SGD_LR,
    WORKLOADS,
    check_activation,
)

torch.set_num_threads(os.cpu_count() or 1)


def chain_loss(x):
    return torch.sum(torch.tanh(CHAIN_A * x + CHAIN_B) * torch.sigmoid(x) - 0.5 * torch.exp(-x * x))


ACT = {"relu": torch.relu, "tanh": torch.tanh}  # tanh: the compile_latency edit


def mlp_loss(p, d, act=torch.relu):
    n = len(p) // 2
    h = d["x"]
    for i in range(1, n):
        h = act(h @ p[f"w{i}"] + p[f"b{i}"])
    return F.cross_entropy(h @ p[f"w{n}"] + p[f"b{n}"], d["y"])


def cnn_loss(p, d, act=torch.relu):
    h = F.max_pool2d(act(F.conv2d(d["x"], p["c1w"], p["c1b"], padding=1)), 2)
    h = F.max_pool2d(act(F.conv2d(h, p["c2w"], p["c2b"], padding=1)), 2)
    return F.cross_entropy(h.flatten(1) @ p["wd"] + p["bd"], d["y"])


def transformer_loss(p, d):
    x = d["x"]
    dim = x.shape[-1]
    a = F.layer_norm(x, (dim,), p["ln1_g"], p["ln1_b"], eps=1e-5)
    q, k, v = a @ p["wq"], a @ p["wk"], a @ p["wv"]
    att = torch.softmax(q @ k.transpose(1, 2) / dim**0.5 + d["mask"], dim=-1)
    h = x + (att @ v) @ p["wo"]
    u = F.layer_norm(h, (dim,), p["ln2_g"], p["ln2_b"], eps=1e-5) @ p["w1"] + p["b1"]
    out = h + F.gelu(u, approximate="tanh") @ p["w2"] + p["b2"]
    return F.cross_entropy(out.reshape(-1, dim) @ p["wh"] + p["bh"], d["y"].reshape(-1))


LOSSES = {
    "mlp_large": mlp_loss,
    "mlp_small": mlp_loss,
    "cnn": cnn_loss,
    "transformer": transformer_loss,
}


def make_step(workload: str, data: dict, params: dict, activation: str = "relu",
              compiled: bool = False):
    """The eager step, or with ``compiled`` (the torch_compile system) the same step with the
    loss under ``torch.compile`` (forward and backward: AOTAutograd + Inductor) and the
    optimizer's ``step`` under ``torch.compile`` too (PyTorch's recipe for compiling a
    training step; ``loss.backward()`` itself stays a call from Python)."""
    from benchmarks.systems import Step

    check_activation(workload, activation)
    kind = WORKLOADS[workload].kind
    wrap = torch.compile if compiled else (lambda f: f)
    tdata = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in data.items()}
    if kind == "grad":
        x = tdata["x"].clone().requires_grad_(True)
        chain = wrap(chain_loss)

        def vg():
            x.grad = None
            value = chain(x)
            value.backward()
            return float(value.detach()), {"x": x.grad.numpy()}

        return Step(run=lambda: vg()[0], value_and_grad=vg)

    loss_fn = LOSSES[workload]
    if activation != "relu":
        loss_fn = functools.partial(loss_fn, act=ACT[activation])
    loss_fn = wrap(loss_fn)
    tp = {k: torch.from_numpy(v.copy()).requires_grad_(True) for k, v in params.items()}
    if kind == "sgd":
        opt = torch.optim.SGD(list(tp.values()), lr=SGD_LR)
    else:
        opt = torch.optim.Adam(list(tp.values()), lr=ADAM_LR, betas=ADAM_BETAS, eps=ADAM_EPS)
    opt_step = wrap(opt.step)

    def run():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(tp, tdata)
        loss.backward()
        opt_step()
        return float(loss.detach())

    def vg():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(tp, tdata)
        loss.backward()
        grads = {k: t.grad.detach().numpy().copy() for k, t in tp.items()}
        opt.zero_grad(set_to_none=True)
        return float(loss.detach()), grads

    def get_params():
        return {k: t.detach().numpy().copy() for k, t in tp.items()}

    return Step(run=run, value_and_grad=vg, get_params=get_params)
