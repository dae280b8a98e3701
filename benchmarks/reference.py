"""NumPy reference: forward pass plus hand-written backward, layer by layer (the textbook method).

dX = dY Wᵀ, dW = Xᵀ dY, bias gradients sum over the batch, convolution via im2col / col2im,
max-pool backward through the arg-max mask, layer norm and attention backward by hand.
The code is dtype-generic: the harness runs it in float64 to get the reference every system
(including the float32 NumPy baseline, which runs this same code) is checked against.
"""

from __future__ import annotations

import numpy as np

from benchmarks.workloads import (
    ADAM_BETAS,
    ADAM_EPS,
    CHAIN_A,
    CHAIN_B,
    GELU_C,
    LN_EPS,
    TF_SCALE,
)


def chain_vg(data):
    x = data["x"]
    t = np.tanh(CHAIN_A * x + CHAIN_B)
    s = 1.0 / (1.0 + np.exp(-x))
    e = np.exp(-x * x)
    value = np.sum(t * s - 0.5 * e)
    grad = CHAIN_A * (1.0 - t * t) * s + t * s * (1.0 - s) + x * e
    return value, {"x": grad}


def softmax_ce(logits, y):
    """Mean softmax cross-entropy and its gradient with respect to ``logits``."""
    n = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = -(z[rows, y] - np.log(s[:, 0])).mean()
    d = e / s
    d[rows, y] -= 1.0
    return loss, d / n


def act_forward(z, activation="relu"):
    """The hidden activation: ReLU, or tanh (the compile_latency edit)."""
    return np.tanh(z) if activation == "tanh" else np.maximum(z, 0)


def act_backward(h, activation="relu"):
    """d act / d z from the activation's output ``h``."""
    return 1.0 - h * h if activation == "tanh" else h > 0


def mlp_vg(params, data, activation="relu"):
    x, y = data["x"], data["y"]
    n = len(params) // 2
    acts = [x]
    h = x
    for i in range(1, n + 1):
        z = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < n:
            h = act_forward(z, activation)
            acts.append(h)
    loss, d = softmax_ce(z, y)
    grads = {}
    for i in range(n, 0, -1):
        h_in = acts[i - 1]
        grads[f"w{i}"] = h_in.T @ d
        grads[f"b{i}"] = d.sum(axis=0)
        if i > 1:
            d = (d @ params[f"w{i}"].T) * act_backward(h_in, activation)
    return loss, grads


# ----------------------------------------------------------------------------- conv via im2col


def im2col(x, k=3):
    """(B, C, H, W) -> (B*H*W, C*k*k) patches of the zero-padded input ('same' conv, stride 1)."""
    b, c, h, w = x.shape
    p = (k - 1) // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    patches = np.stack([xp[:, :, i : i + h, j : j + w] for i in range(k) for j in range(k)], -1)
    return patches.transpose(0, 2, 3, 1, 4).reshape(b * h * w, c * k * k)


def col2im(dcols, shape, k=3):
    b, c, h, w = shape
    p = (k - 1) // 2
    d = dcols.reshape(b, h, w, c, k, k).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((b, c, h + 2 * p, w + 2 * p), dtype=dcols.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i : i + h, j : j + w] += d[:, :, i, j]
    return dxp[:, :, p : p + h, p : p + w]


def conv_forward(x, w):
    b, _, h, wd = x.shape
    o = w.shape[0]
    cols = im2col(x, w.shape[-1])
    out = cols @ w.reshape(o, -1).T  # (B*H*W, O)
    return out.reshape(b, h, wd, o).transpose(0, 3, 1, 2), cols


def conv_backward(dout, cols, w, x_shape, need_dx=True):
    o = w.shape[0]
    d2 = dout.transpose(0, 2, 3, 1).reshape(-1, o)  # (B*H*W, O)
    dw = (d2.T @ cols).reshape(w.shape)
    db = d2.sum(axis=0)
    dx = col2im(d2 @ w.reshape(o, -1), x_shape, w.shape[-1]) if need_dx else None
    return dx, dw, db


def pool_forward(x):
    b, c, h, w = x.shape
    xr = x.reshape(b, c, h // 2, 2, w // 2, 2)
    out = xr.max(axis=(3, 5))
    mask = xr == out[:, :, :, None, :, None]
    return out, mask


def pool_backward(dout, mask):
    dxr = mask * dout[:, :, :, None, :, None]
    b, c, h2, _, w2, _ = dxr.shape
    return dxr.reshape(b, c, h2 * 2, w2 * 2)


def cnn_vg(params, data, activation="relu"):
    x, y = data["x"], data["y"]
    p = params
    z1, cols1 = conv_forward(x, p["c1w"])
    a1 = act_forward(z1 + p["c1b"][None, :, None, None], activation)
    h1, m1 = pool_forward(a1)
    z2, cols2 = conv_forward(h1, p["c2w"])
    a2 = act_forward(z2 + p["c2b"][None, :, None, None], activation)
    h2, m2 = pool_forward(a2)
    f = h2.reshape(h2.shape[0], -1)
    loss, d = softmax_ce(f @ p["wd"] + p["bd"], y)
    g = {"wd": f.T @ d, "bd": d.sum(axis=0)}
    dh2 = (d @ p["wd"].T).reshape(h2.shape)
    dz2 = pool_backward(dh2, m2) * act_backward(a2, activation)
    dh1, g["c2w"], g["c2b"] = conv_backward(dz2, cols2, p["c2w"], h1.shape)
    dz1 = pool_backward(dh1, m1) * act_backward(a1, activation)
    _, g["c1w"], g["c1b"] = conv_backward(dz1, cols1, p["c1w"], x.shape, need_dx=False)
    return loss, g


# ----------------------------------------------------------------------------- transformer


def ln_forward(x, g, b):
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + LN_EPS)
    xhat = xc * rstd
    return xhat * g + b, (xhat, rstd)


def ln_backward(dy, g, cache, need_dx=True):
    xhat, rstd = cache
    dg = (dy * xhat).sum(axis=(0, 1))
    db = dy.sum(axis=(0, 1))
    if not need_dx:
        return None, dg, db
    dxh = dy * g
    dx = rstd * (
        dxh - dxh.mean(axis=-1, keepdims=True) - xhat * (dxh * xhat).mean(axis=-1, keepdims=True)
    )
    return dx, dg, db


def transformer_vg(params, data):
    p = params
    x, y, mask = data["x"], data["y"], data["mask"]
    bsz, t, d = x.shape
    flat = lambda a: a.reshape(bsz * t, -1)
    # forward
    a, ln1 = ln_forward(x, p["ln1_g"], p["ln1_b"])
    q, k, v = a @ p["wq"], a @ p["wk"], a @ p["wv"]
    s = q @ k.transpose(0, 2, 1) * TF_SCALE + mask
    s = np.exp(s - s.max(axis=-1, keepdims=True))
    att = s / s.sum(axis=-1, keepdims=True)
    o = att @ v
    h = x + o @ p["wo"]
    c, ln2 = ln_forward(h, p["ln2_g"], p["ln2_b"])
    u = c @ p["w1"] + p["b1"]
    th = np.tanh(GELU_C * (u + 0.044715 * u**3))
    gl = 0.5 * u * (1.0 + th)
    out = h + gl @ p["w2"] + p["b2"]
    loss, dlog = softmax_ce(flat(out) @ p["wh"] + p["bh"], y.reshape(-1))
    # backward
    gr = {"wh": flat(out).T @ dlog, "bh": dlog.sum(axis=0)}
    dout = (dlog @ p["wh"].T).reshape(bsz, t, d)
    gr["w2"] = flat(gl).T @ flat(dout)
    gr["b2"] = dout.sum(axis=(0, 1))
    dgl = dout @ p["w2"].T
    dgelu = 0.5 * (1.0 + th) + 0.5 * u * (1.0 - th * th) * GELU_C * (1.0 + 3 * 0.044715 * u * u)
    du = dgl * dgelu
    gr["w1"] = flat(c).T @ flat(du)
    gr["b1"] = du.sum(axis=(0, 1))
    dc = du @ p["w1"].T
    dh_ln, gr["ln2_g"], gr["ln2_b"] = ln_backward(dc, p["ln2_g"], ln2)
    dh = dout + dh_ln
    gr["wo"] = flat(o).T @ flat(dh)
    do = dh @ p["wo"].T
    datt = do @ v.transpose(0, 2, 1)
    dv = att.transpose(0, 2, 1) @ do
    ds = att * (datt - (datt * att).sum(axis=-1, keepdims=True)) * TF_SCALE
    dq = ds @ k
    dk = ds.transpose(0, 2, 1) @ q
    gr["wq"], gr["wk"], gr["wv"] = flat(a).T @ flat(dq), flat(a).T @ flat(dk), flat(a).T @ flat(dv)
    da = dq @ p["wq"].T + dk @ p["wk"].T + dv @ p["wv"].T
    _, gr["ln1_g"], gr["ln1_b"] = ln_backward(da, p["ln1_g"], ln1, need_dx=False)
    return loss, gr


def value_and_grad(workload, params, data, activation="relu"):
    """Loss and gradients of ``workload`` (``activation``: the MLPs' and the CNN's, "relu" or
    the compile_latency edit "tanh")."""
    if activation != "relu":
        return {"mlp_large": mlp_vg, "mlp_small": mlp_vg, "cnn": cnn_vg}[workload](
            params, data, activation)
    return VALUE_AND_GRAD[workload](params, data)


VALUE_AND_GRAD = {
    "chain": lambda params, data: chain_vg(data),
    "mlp_large": mlp_vg,
    "mlp_small": mlp_vg,
    "cnn": cnn_vg,
    "transformer": transformer_vg,
}


# ----------------------------------------------------------------------------- optimizers


def sgd_update(params, grads, lr):
    for k, g in grads.items():
        params[k] -= lr * g


class Adam:
    """Adam (Kingma & Ba), bias-corrected, same defaults as torch.optim.Adam."""

    def __init__(self, params, lr, betas=ADAM_BETAS, eps=ADAM_EPS):
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}
        self.t = 0

    def update(self, params, grads):
        self.t += 1
        c1 = 1.0 - self.b1**self.t
        c2 = 1.0 - self.b2**self.t
        for k, g in grads.items():
            m, v = self.m[k], self.v[k]
            m *= self.b1
            m += (1.0 - self.b1) * g
            v *= self.b2
            v += (1.0 - self.b2) * (g * g)
            params[k] -= (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)
