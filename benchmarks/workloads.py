"""Benchmark workloads: fixed-seed data and parameters, user-style loss functions, and costs.

Every workload is described by a :class:`Workload` with

* ``make()`` -> ``(data, params)``: float32 NumPy arrays from a fixed seed (labels are int64);
* ``kind``: ``"grad"`` (value and gradient of ``data["x"]``), ``"sgd"`` or ``"adam"`` (one training
  step that updates ``params`` in place);
* ``flops`` / ``bytes``: the work a step must do, used for the machine bound (see ``costs``).

``make_loss(name, nn)`` returns the loss written the way a chainjit user writes it: plain NumPy
plus the ``nn`` helpers (``softmax``, ``cross_entropy``, ``conv2d``, ``max_pool2d``); passing
``compiler.nn``, which also runs on NumPy arrays, runs it eagerly.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

F32 = np.float32

# chain: sum(tanh(a*x + b) * sigmoid(x) - 0.5*exp(-x*x))
CHAIN_N = 4_194_304
CHAIN_A = 0.7
CHAIN_B = 0.1

SGD_LR = 0.01
ADAM_LR = 1e-3
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
LN_EPS = 1e-5

# transformer block sizes
TF_B, TF_T, TF_D, TF_F, TF_V = 16, 128, 128, 512, 64
TF_SCALE = 1.0 / math.sqrt(TF_D)
GELU_C = math.sqrt(2.0 / math.pi)


@dataclass
class Workload:
    name: str
    kind: str  # "grad" | "sgd" | "adam"
    make: Callable[[], tuple[dict, dict]]
    flops: float  # matmul/conv FLOPs of one step (forward + backward)
    description: str
    state_arrays: int = 0  # optimiser arrays per parameter (Adam: 2)
    fixed_bytes: float | None = None  # when the bytes are known without making the data

    @functools.cached_property
    def bytes(self) -> float:
        """Bytes one step must move at least (inputs, params read + updated). Computed from
        the data on first use, not at import: a process timed by compile_latency imports
        this module and should not pay for every workload's data."""
        if self.fixed_bytes is not None:
            return self.fixed_bytes
        data, params = self.make()
        return _data_bytes(data) + _param_bytes(params, self.state_arrays)


# ----------------------------------------------------------------------------- data


def _normal(rng, shape, scale):
    return (rng.standard_normal(shape) * scale).astype(F32)


def make_chain(seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal(CHAIN_N).astype(F32)}, {}


def make_mlp(sizes, batch, seed):
    rng = np.random.default_rng(seed)
    params = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes), start=1):
        params[f"w{i}"] = _normal(rng, (n_in, n_out), math.sqrt(2.0 / n_in))
        params[f"b{i}"] = _normal(rng, (n_out,), 0.01)
    data = {
        "x": rng.standard_normal((batch, sizes[0])).astype(F32),
        "y": rng.integers(0, sizes[-1], size=batch).astype(np.int64),
    }
    return data, params


def make_cnn(seed=3, batch=64):
    rng = np.random.default_rng(seed)
    params = {
        "c1w": _normal(rng, (16, 1, 3, 3), math.sqrt(2.0 / 9)),
        "c1b": _normal(rng, (16,), 0.01),
        "c2w": _normal(rng, (32, 16, 3, 3), math.sqrt(2.0 / 144)),
        "c2b": _normal(rng, (32,), 0.01),
        "wd": _normal(rng, (1568, 10), math.sqrt(1.0 / 1568)),
        "bd": _normal(rng, (10,), 0.01),
    }
    data = {
        "x": rng.standard_normal((batch, 1, 28, 28)).astype(F32),
        "y": rng.integers(0, 10, size=batch).astype(np.int64),
    }
    return data, params


def make_transformer(seed=4):
    rng = np.random.default_rng(seed)
    d, f, v = TF_D, TF_F, TF_V
    params = {
        "ln1_g": (1.0 + _normal(rng, (d,), 0.1)).astype(F32),
        "ln1_b": _normal(rng, (d,), 0.1),
        "wq": _normal(rng, (d, d), 1 / math.sqrt(d)),
        "wk": _normal(rng, (d, d), 1 / math.sqrt(d)),
        "wv": _normal(rng, (d, d), 1 / math.sqrt(d)),
        "wo": _normal(rng, (d, d), 1 / math.sqrt(d)),
        "ln2_g": (1.0 + _normal(rng, (d,), 0.1)).astype(F32),
        "ln2_b": _normal(rng, (d,), 0.1),
        "w1": _normal(rng, (d, f), 1 / math.sqrt(d)),
        "b1": _normal(rng, (f,), 0.01),
        "w2": _normal(rng, (f, d), 1 / math.sqrt(f)),
        "b2": _normal(rng, (d,), 0.01),
        "wh": _normal(rng, (d, v), 1 / math.sqrt(d)),
        "bh": _normal(rng, (v,), 0.01),
    }
    data = {
        "x": rng.standard_normal((TF_B, TF_T, d)).astype(F32),
        "y": rng.integers(0, v, size=(TF_B, TF_T)).astype(np.int64),  # next-token-style targets
        "mask": causal_mask(),
    }
    return data, params


def causal_mask(t=TF_T):
    """Additive causal mask (T, T): 0 on and below the diagonal, -1e9 above."""
    return np.where(np.tril(np.ones((t, t), dtype=bool)), 0.0, -1e9).astype(F32)


# ----------------------------------------------------------------------------- costs


def _param_bytes(params, state_arrays=0):
    """Read + write every parameter (and ``state_arrays`` optimizer buffers of the same size)."""
    n = sum(p.size for p in params.values())
    return 2 * 4 * n * (1 + state_arrays)


def _data_bytes(data):
    return sum(a.nbytes for a in data.values())


def mlp_flops(sizes, batch):
    """2*m*n*k for the forward matmul, dW and dX per layer (no dX for the input layer)."""
    total = 0
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        mm = 2 * batch * n_in * n_out
        total += mm * (2 if i == 0 else 3)
    return total


def cnn_flops(batch=64):
    conv1 = 2 * batch * 28 * 28 * 16 * 1 * 9
    conv2 = 2 * batch * 14 * 14 * 32 * 16 * 9
    dense = 2 * batch * 1568 * 10
    return 2 * conv1 + 3 * conv2 + 3 * dense  # conv1 needs no dX


def transformer_flops():
    n = TF_B * TF_T
    d, f, v, t = TF_D, TF_F, TF_V, TF_T
    fwd = 2 * n * d * d * 4  # q, k, v, o projections
    fwd += 2 * 2 * TF_B * t * t * d  # q k^T and p v (dense, masked half included)
    fwd += 2 * 2 * n * d * f  # MLP
    fwd += 2 * n * d * v  # head
    return 3 * fwd


MLP_LARGE = (784, 512, 512, 10)
MLP_SMALL = (64, 64, 10)


def _make_mlp_large():
    return make_mlp(MLP_LARGE, 128, seed=1)


def _make_mlp_small():
    return make_mlp(MLP_SMALL, 32, seed=2)


def build_workloads() -> dict[str, Workload]:
    ws = {}
    ws["chain"] = Workload(
        "chain", "grad", make_chain, 0.0,
        "sum(tanh(a*x+b)*sigmoid(x) - 0.5*exp(-x*x)), 4M float32, value + grad",
        fixed_bytes=2 * 4 * CHAIN_N,
    )  # fmt: skip
    ws["mlp_large"] = Workload(
        "mlp_large", "sgd", _make_mlp_large, mlp_flops(MLP_LARGE, 128),
        "MLP 784-512-512-10, batch 128, SGD step",
    )  # fmt: skip
    ws["mlp_small"] = Workload(
        "mlp_small", "sgd", _make_mlp_small, mlp_flops(MLP_SMALL, 32),
        "MLP 64-64-10, batch 32, SGD step",
    )  # fmt: skip
    ws["cnn"] = Workload(
        "cnn", "sgd", make_cnn, cnn_flops(),
        "conv16-pool-conv32-pool-dense, 64x1x28x28, SGD step",
    )  # fmt: skip
    ws["transformer"] = Workload(
        "transformer", "adam", make_transformer, transformer_flops(),
        "pre-LN causal transformer block, B16 T128 D128 F512, Adam step",
        state_arrays=2,
    )  # fmt: skip
    return ws


WORKLOADS = build_workloads()
TIMED = ["chain", "mlp_large", "mlp_small", "cnn", "transformer"]
ALL = TIMED + ["compile_latency"]


# ----------------------------------------------------------------------------- user-style losses


ACTIVATIONS = ("relu", "tanh")  # "tanh": the compile_latency edit of the MLPs and the CNN
EDITABLE = ("mlp_large", "mlp_small", "cnn")  # the workloads that have an activation to edit


def check_activation(name: str, activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r}: choose from {ACTIVATIONS}")
    if activation != "relu" and name not in EDITABLE:
        raise ValueError(f"{name} has no activation to edit (only {', '.join(EDITABLE)})")


def make_loss(name: str, nn, activation: str = "relu") -> Callable:
    """The loss of workload ``name`` as a chainjit user writes it (plain NumPy + ``nn``).

    ``activation="tanh"`` is the edit of the compile_latency rows: the MLPs' and the CNN's
    ``np.maximum(h, 0.0)`` becomes ``np.tanh(h)``, nothing else changes."""
    check_activation(name, activation)

    def act(h):
        return np.tanh(h) if activation == "tanh" else np.maximum(h, 0.0)

    def chain(x):
        a, b = CHAIN_A, CHAIN_B
        sig = 1.0 / (1.0 + np.exp(-x))
        return np.sum(np.tanh(a * x + b) * sig - 0.5 * np.exp(-x * x))

    def mlp(params, x, y):
        n = len(params) // 2
        h = x
        for i in range(1, n):
            h = act(h @ params[f"w{i}"] + params[f"b{i}"])
        return nn.cross_entropy(h @ params[f"w{n}"] + params[f"b{n}"], y)

    def cnn(params, x, y):
        h = nn.conv2d(x, params["c1w"], stride=1, padding=1) + params["c1b"][None, :, None, None]
        h = nn.max_pool2d(act(h), 2)
        h = nn.conv2d(h, params["c2w"], stride=1, padding=1) + params["c2b"][None, :, None, None]
        h = nn.max_pool2d(act(h), 2)
        h = h.reshape(h.shape[0], -1)
        return nn.cross_entropy(h @ params["wd"] + params["bd"], y)

    def layer_norm(h, g, b):
        mu = np.mean(h, axis=-1, keepdims=True)
        var = np.mean((h - mu) * (h - mu), axis=-1, keepdims=True)
        return (h - mu) / np.sqrt(var + LN_EPS) * g + b

    mask = causal_mask()  # a constant the compiled loss closes over

    def transformer(params, x, y):
        p = params
        a = layer_norm(x, p["ln1_g"], p["ln1_b"])
        q, k, v = a @ p["wq"], a @ p["wk"], a @ p["wv"]
        att = nn.softmax(q @ k.transpose(0, 2, 1) * TF_SCALE + mask, axis=-1)
        h = x + (att @ v) @ p["wo"]
        c = layer_norm(h, p["ln2_g"], p["ln2_b"])
        u = c @ p["w1"] + p["b1"]
        g = 0.5 * u * (1.0 + np.tanh(GELU_C * (u + 0.044715 * u * u * u)))
        out = h + g @ p["w2"] + p["b2"]
        logits = out.reshape(-1, out.shape[-1]) @ p["wh"] + p["bh"]
        return nn.cross_entropy(logits, y.reshape(-1))

    return {
        "chain": chain,
        "mlp_large": mlp,
        "mlp_small": mlp,
        "cnn": cnn,
        "transformer": transformer,
    }[name]

