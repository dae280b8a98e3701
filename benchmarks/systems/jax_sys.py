"""JAX: the losses in ``jax.numpy``, ``jax.value_and_grad`` and the update inside one
``jax.jit``."""

from __future__ import annotations

import functools

import jax

jax.config.update("jax_platforms", "cpu")

import jax.numpy as jnp
import numpy as np

from benchmarks.workloads import (
    ADAM_BETAS,
    ADAM_EPS,
    ADAM_LR,
    CHAIN_A,
    CHAIN_B,
    GELU_C,
    LN_EPS,
    SGD_LR,
    TF_SCALE,
    WORKLOADS,
    check_activation,
)


def chain_loss(x):
    return jnp.sum(jnp.tanh(CHAIN_A * x + CHAIN_B) * jax.nn.sigmoid(x) - 0.5 * jnp.exp(-x * x))


def cross_entropy(logits, y):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


ACT = {"relu": jax.nn.relu, "tanh": jnp.tanh}  # tanh: the compile_latency edit


def mlp_loss(params, data, act=jax.nn.relu):
    n = len(params) // 2
    h = data["x"]
    for i in range(1, n):
        h = act(h @ params[f"w{i}"] + params[f"b{i}"])
    return cross_entropy(h @ params[f"w{n}"] + params[f"b{n}"], data["y"])


def _conv(x, w, b):
    dn = ("NCHW", "OIHW", "NCHW")
    y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)
    return y + b[None, :, None, None]


def _pool(x):
    b, c, h, w = x.shape
    return jnp.max(x.reshape(b, c, h // 2, 2, w // 2, 2), axis=(3, 5))


def cnn_loss(p, data, act=jax.nn.relu):
    h = _pool(act(_conv(data["x"], p["c1w"], p["c1b"])))
    h = _pool(act(_conv(h, p["c2w"], p["c2b"])))
    return cross_entropy(h.reshape(h.shape[0], -1) @ p["wd"] + p["bd"], data["y"])


def _ln(x, g, b):
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + LN_EPS) * g + b


def transformer_loss(p, data):
    x = data["x"]
    a = _ln(x, p["ln1_g"], p["ln1_b"])
    q, k, v = a @ p["wq"], a @ p["wk"], a @ p["wv"]
    att = jax.nn.softmax(q @ k.transpose(0, 2, 1) * TF_SCALE + data["mask"], axis=-1)
    h = x + (att @ v) @ p["wo"]
    u = _ln(h, p["ln2_g"], p["ln2_b"]) @ p["w1"] + p["b1"]
    g = 0.5 * u * (1.0 + jnp.tanh(GELU_C * (u + 0.044715 * u**3)))
    out = h + g @ p["w2"] + p["b2"]
    return cross_entropy(out.reshape(-1, out.shape[-1]) @ p["wh"] + p["bh"], data["y"].reshape(-1))


LOSSES = {
    "mlp_large": mlp_loss,
    "mlp_small": mlp_loss,
    "cnn": cnn_loss,
    "transformer": transformer_loss,
}


def _np(tree):
    return {k: np.asarray(v) for k, v in tree.items()}


def make_step(workload: str, data: dict, params: dict, activation: str = "relu"):
    from benchmarks.systems import Step

    check_activation(workload, activation)
    kind = WORKLOADS[workload].kind
    jdata = {k: jnp.asarray(v) for k, v in data.items()}
    if kind == "grad":
        f = jax.jit(jax.value_and_grad(chain_loss))
        x = jdata["x"]

        def run():
            value, g = f(x)
            g.block_until_ready()
            return float(value)

        def vg():
            value, g = f(x)
            return float(value), {"x": np.asarray(g)}

        return Step(run=run, value_and_grad=vg)

    loss_fn = LOSSES[workload]
    if activation != "relu":
        loss_fn = functools.partial(loss_fn, act=ACT[activation])
    vg_fn = jax.jit(jax.value_and_grad(loss_fn))
    state = {"params": {k: jnp.asarray(v) for k, v in params.items()}}

    if kind == "sgd":

        @jax.jit
        def train(p, opt, d):
            loss, g = jax.value_and_grad(loss_fn)(p, d)
            return loss, jax.tree_util.tree_map(lambda a, b: a - SGD_LR * b, p, g), opt

        state["opt"] = ()
    else:
        b1, b2 = ADAM_BETAS

        @jax.jit
        def train(p, opt, d):
            loss, g = jax.value_and_grad(loss_fn)(p, d)
            m, v, t = opt
            t = t + 1
            m = jax.tree_util.tree_map(lambda m_, g_: b1 * m_ + (1 - b1) * g_, m, g)
            v = jax.tree_util.tree_map(lambda v_, g_: b2 * v_ + (1 - b2) * g_ * g_, v, g)
            c1, c2 = 1 - b1**t, 1 - b2**t

            def upd(p_, m_, v_):
                return p_ - (ADAM_LR / c1) * m_ / (jnp.sqrt(v_ / c2) + ADAM_EPS)

            return loss, jax.tree_util.tree_map(upd, p, m, v), (m, v, t)

        zeros = {k: jnp.zeros_like(v) for k, v in state["params"].items()}
        state["opt"] = (zeros, dict(zeros), jnp.asarray(0, jnp.float32))

    def run():
        loss, state["params"], state["opt"] = train(state["params"], state["opt"], jdata)
        jax.block_until_ready((loss, state["params"], state["opt"]))
        return float(loss)

    def vg():
        loss, g = vg_fn(state["params"], jdata)
        return float(loss), _np(g)

    return Step(run=run, value_and_grad=vg, get_params=lambda: _np(state["params"]))
