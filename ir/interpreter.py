"""The reference interpreter: evaluates any graph with NumPy. It defines what the IR means.

Codegen output, passes and gradients are all tested against this. `EVAL_RULES` maps each op to
a NumPy function of the input arrays and the node's params.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ir.graph import Graph, Node, Var
from ir.ops import Op

EVAL_RULES: dict[Op, Callable[..., np.ndarray]] = {
    Op.CONSTANT: lambda *, value: value,
    Op.NEG: np.negative,
    Op.EXP: np.exp,
    Op.LOG: np.log,
    Op.LOG1P: np.log1p,
    Op.EXPM1: np.expm1,
    Op.SQRT: np.sqrt,
    Op.TANH: np.tanh,
    Op.LOGISTIC: lambda x: 0.5 * np.tanh(0.5 * x) + 0.5,  # = 1/(1+exp(-x)), no overflow
    Op.SIN: np.sin,
    Op.COS: np.cos,
    Op.ABS: np.abs,
    Op.SIGN: np.sign,
    Op.CAST: lambda x, *, dtype: x.astype(dtype),
    Op.STOP_GRADIENT: lambda x: x,
    Op.ADD: np.add,
    Op.SUB: np.subtract,
    Op.MUL: np.multiply,
    Op.DIV: np.divide,
    Op.POW: np.power,
    Op.MAX: np.maximum,
    Op.MIN: np.minimum,
    Op.LT: np.less,
    Op.LE: np.less_equal,
    Op.GT: np.greater,
    Op.GE: np.greater_equal,
    Op.EQ: np.equal,
    Op.NE: np.not_equal,
    Op.WHERE: np.where,
    Op.BROADCAST_TO: lambda x, *, shape: np.broadcast_to(x, shape),
    Op.RESHAPE: lambda x, *, shape: np.reshape(x, shape),
    Op.TRANSPOSE: lambda x, *, perm: np.transpose(x, perm),
    Op.SLICE: lambda x, *, starts, stops, steps: x[tuple(map(slice, starts, stops, steps))],
    Op.CONCATENATE: lambda *xs, axis: np.concatenate(xs, axis),
    Op.REDUCE_SUM: lambda x, *, axes: np.sum(x, axis=axes),
    Op.REDUCE_MAX: lambda x, *, axes: np.max(x, axis=axes),
    Op.REDUCE_PROD: lambda x, *, axes: np.prod(x, axis=axes),
    Op.GATHER: lambda x, idx, *, axis: np.take(x, idx, axis=axis),
    Op.MATMUL: np.matmul,
}


def _pad(x, *, lows, highs, interiors):
    shape = [
        lo + hi + d + max(d - 1, 0) * inner
        for d, lo, hi, inner in zip(x.shape, lows, highs, interiors)
    ]
    out = np.zeros(shape, x.dtype)
    window = tuple(
        slice(lo, lo + d + max(d - 1, 0) * inner, inner + 1)
        for d, lo, inner in zip(x.shape, lows, interiors)
    )
    out[window] = x
    return out


def _scatter_add(g, idx, *, axis, size):
    out = np.zeros(g.shape[:axis] + (size,) + g.shape[axis + idx.ndim :], g.dtype)
    # Move the indexed axis first so np.add.at indexes it with idx directly.
    moved = np.moveaxis(out, axis, 0)
    updates = np.moveaxis(
        g.reshape(g.shape[:axis] + (idx.size,) + g.shape[axis + idx.ndim :]), axis, 0
    )
    np.add.at(moved, idx.ravel(), updates)
    return out


def random_uniform_bits(key: int, size: int) -> np.ndarray:
    """Counter-based random bits: splitmix64 of (key, element index). Codegen mirrors this."""
    with np.errstate(over="ignore"):
        z = np.uint64(np.int64(key).astype(np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
        z = np.arange(size, dtype=np.uint64) * np.uint64(0xBF58476D1CE4E5B9) + z
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def _random_uniform(key, *, shape, dtype):
    bits = random_uniform_bits(int(key), int(np.prod(shape, dtype=np.int64)))
    values = (bits >> np.uint64(40)).astype(np.float64) * 2.0**-24  # 24 bits: exact in f32
    return values.astype(dtype).reshape(shape)


def _conv2d(x, w, *, strides, padding, dilation):
    # negative padding crops; then every kh*kw window (dilated) is contracted with w
    lows = [max(-lo, 0) for lo, _ in padding]
    highs = [x.shape[2 + a] - max(-hi, 0) for a, (_, hi) in enumerate(padding)]
    x = x[:, :, lows[0]:highs[0], lows[1]:highs[1]]
    pads = [(0, 0), (0, 0)] + [(max(lo, 0), max(hi, 0)) for lo, hi in padding]
    x = np.pad(x, pads)
    kh, kw = w.shape[2:]
    (dh, dw), (sh, sw) = dilation, strides
    win = np.lib.stride_tricks.sliding_window_view(x, (dh * (kh - 1) + 1, dw * (kw - 1) + 1),
                                                   axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # (N, C, Ho, Wo, kh, kw)
    return np.einsum("ncyxij,ocij->noyx", win, w, optimize=True)


def _fused(*xs, body, **_):  # kind and shape guide codegen only
    return tuple(evaluate(body, xs))


def _gemm(a, b, x, *t, alpha, beta):
    """alpha [t] (a @ b) + beta x in the operands' dtype, as (alpha t) p + beta x: the order
    of the nodes compiler/passes/gemm_epilogue.py folds (x ± s p, s p ± x with s p = c p or
    t p, x maybe c' x'). alpha is ±c or ±1 and beta ±c' or ±1, so alpha t, beta x and the
    signs are exact, and this is bit for bit the arithmetic of the folded nodes."""
    p = np.matmul(a, b)
    scalar = p.dtype.type
    scale = scalar(alpha) * t[0] if t else scalar(alpha)
    return (scale * p + scalar(beta) * x).astype(p.dtype, copy=False)


def _scan(*xs, body, num_consts, num_carry, length, reverse):
    consts = list(xs[:num_consts])
    carry = list(xs[num_consts:num_consts + num_carry])
    seqs = xs[num_consts + num_carry:]
    ys: list[list[np.ndarray]] = [[] for _ in body.outputs[num_carry:]]
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for t in steps:
        outs = evaluate(body, consts + carry + [x[t] for x in seqs])
        carry = outs[:num_carry]
        for stack, y in zip(ys, outs[num_carry:]):
            stack.append(y)
    stacked = []
    for stack, var in zip(ys, body.outputs[num_carry:]):
        stack = stack[::-1] if reverse else stack
        stacked.append(np.stack(stack) if stack else np.zeros((0, *var.shape), var.dtype))
    return tuple(carry + stacked)


def _while(*xs, cond, body, num_cond_consts):
    num_carry = len(body.outputs)
    cond_consts = list(xs[:num_cond_consts])
    body_consts = list(xs[num_cond_consts:len(xs) - num_carry])
    carry = list(xs[len(xs) - num_carry:])
    while bool(evaluate(cond, cond_consts + carry)[0]):
        carry = evaluate(body, body_consts + carry)
    return tuple(carry)


def _fmod(x, y):
    if x.dtype.kind == "f":
        return np.fmod(x, y)
    return np.where(y == 0, 0, np.fmod(x, np.where(y == 0, 1, y)))  # NumPy's 0, no warning


def _slogdet(a):
    sign, logabsdet = np.linalg.slogdet(a)
    return np.stack([sign, logabsdet], axis=-1)


EVAL_RULES[Op.ATAN2] = np.arctan2
EVAL_RULES[Op.FMOD] = _fmod
EVAL_RULES[Op.ARGSORT] = lambda x: np.argsort(x, axis=-1, kind="stable").astype(np.int64)
EVAL_RULES[Op.SOLVE] = np.linalg.solve
EVAL_RULES[Op.SLOGDET] = _slogdet
EVAL_RULES[Op.CHOLESKY] = np.linalg.cholesky
EVAL_RULES[Op.PAD] = _pad
EVAL_RULES[Op.CONV2D] = _conv2d
EVAL_RULES[Op.SCATTER_ADD] = _scatter_add
EVAL_RULES[Op.RANDOM_UNIFORM] = _random_uniform
EVAL_RULES[Op.GEMM] = _gemm
EVAL_RULES[Op.FUSED] = _fused
EVAL_RULES[Op.SCAN] = _scan
EVAL_RULES[Op.WHILE] = _while


def cut(flat: np.ndarray, shapes) -> tuple[np.ndarray, ...]:
    """`flat`'s elements in order, as arrays of `shapes` (ALL_REDUCE's outputs)."""
    parts, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        parts.append(flat[start : start + size].reshape(shape))
        start += size
    return tuple(parts)


def _all_reduce_one_rank(x, *, reduction, shapes):
    """One rank's all_reduce: x itself, cut into its parts. compiler/collectives.py puts the
    rule that reduces across ranks here when the compiler is imported."""
    return cut(np.array(x).ravel(), shapes)


EVAL_RULES[Op.ALL_REDUCE] = _all_reduce_one_rank


def eval_node(node: Node, args: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Evaluate one node; results are cast to the node's declared output types."""
    with np.errstate(all="ignore"):  # inf/nan propagate as in NumPy, without warnings
        return _eval(node, args)


def _eval(node: Node, args: Sequence[np.ndarray]) -> list[np.ndarray]:
    result = EVAL_RULES[node.op](*args, **node.params)
    results = result if isinstance(result, tuple) else (result,)
    return [r if type(r) is np.ndarray and r.dtype == v.dtype
            else np.asarray(r).astype(v.dtype, copy=False)
            for r, v in zip(results, node.outputs)]


def evaluate(graph: Graph, args: Sequence) -> list[np.ndarray]:
    """Evaluate `graph` on NumPy arrays, one per graph input, and return its outputs."""
    if len(args) != len(graph.inputs):
        raise TypeError(f"graph takes {len(graph.inputs)} inputs, got {len(args)}")
    env: dict[Var, np.ndarray] = {
        var: np.asarray(arg, dtype=var.dtype) for var, arg in zip(graph.inputs, args)
    }
    with np.errstate(all="ignore"):  # once for the graph: per node it cost more than small ops
        for node in graph.nodes:
            for var, value in zip(node.outputs, _eval(node, [env[v] for v in node.inputs])):
                env[var] = value
    return [env[var] for var in graph.outputs]
