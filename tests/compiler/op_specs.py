"""One table of traceable operations, shared by the per-op tests (forward vs NumPy here; the
autodiff and codegen tests drive their checks from their own tables of primitives).

Each spec: a name, a function written in plain NumPy (run eagerly as the reference and traced
by chainjit), the input shapes, the input domain, and whether its inputs broadcast (so
hypothesis may draw broadcastable shapes for it).
"""

from __future__ import annotations

import numpy as np

from tests.compiler.spec_type import OpSpec


def _draw(rng, shape, domain, dtype):
    square = len(shape) >= 2 and shape[-1] == shape[-2]
    if domain in ("wellcond", "spd") and not square:  # the right-hand sides of a solve
        return rng.normal(size=shape).astype(dtype)
    if domain in ("wellcond", "spd"):  # square matrices in the last two axes
        a = rng.uniform(-0.4, 0.4, shape)
        if domain == "spd":
            a = a @ np.swapaxes(a, -1, -2)
        return (a + np.eye(shape[-1])).astype(dtype)
    if domain == "away":  # |x| in [0.5, 2]: away from kinks at 0
        return (rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)).astype(dtype)
    if domain == "above1":
        return rng.uniform(1.2, 3.0, shape).astype(dtype)
    if domain == "distinct":  # no ties, far apart (sorts, extremes)
        return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.37 - 1).astype(dtype)
    if domain == "positive":
        return rng.uniform(0.5, 2.0, shape).astype(dtype)
    if domain == "unit":
        return rng.uniform(-0.9, 0.9, shape).astype(dtype)
    return rng.normal(size=shape).astype(dtype)


def make_inputs(spec: OpSpec, rng, dtype=np.float32, shapes=None):
    shapes = shapes or spec.shapes
    return [
        rng.integers(0, 4, shape) if i in spec.int_inputs else _draw(rng, shape, spec.domain, dtype)
        for i, shape in enumerate(shapes)
    ]


UNARY = [
    ("negative", np.negative, "real"), ("exp", np.exp, "real"), ("log", np.log, "positive"),
    ("log1p", np.log1p, "positive"), ("expm1", np.expm1, "real"), ("sqrt", np.sqrt, "positive"),
    ("tanh", np.tanh, "real"), ("sin", np.sin, "real"), ("cos", np.cos, "real"),
    ("abs", np.abs, "real"), ("sign", np.sign, "real"), ("square", np.square, "real"),
    ("reciprocal", np.reciprocal, "positive"),
]
BINARY = [
    ("add", np.add), ("subtract", np.subtract), ("multiply", np.multiply),
    ("divide", np.divide), ("maximum", np.maximum), ("minimum", np.minimum),
    ("less", np.less), ("less_equal", np.less_equal), ("greater", np.greater),
    ("greater_equal", np.greater_equal), ("equal", np.equal), ("not_equal", np.not_equal),
]

from tests.compiler.numpy_specs import NUMPY_SPECS  # noqa: E402  (issue 17's NumPy API)

OP_SPECS = NUMPY_SPECS + (
    [OpSpec(name, fn, ((3, 4),), domain) for name, fn, domain in UNARY]
    + [OpSpec(name, fn, ((3, 4), (4,)), broadcasts=True) for name, fn in BINARY]
    + [
        OpSpec("power", lambda x, y: x**y, ((3, 4), (3, 4)), "positive", broadcasts=True),
        OpSpec("square_op", lambda x: x**2, ((5,),)),
        OpSpec("where", lambda x, y: np.where(x > 0, x, y), ((3, 4), (4,)), broadcasts=True),
        OpSpec("clip", lambda x: np.clip(x, -0.5, 0.5), ((3, 4),)),
        OpSpec("sum", lambda x: np.sum(x), ((3, 4),)),
        OpSpec("sum_axis", lambda x: np.sum(x, axis=1), ((3, 4, 2),)),
        OpSpec("sum_keepdims", lambda x: x.sum(axis=(0, 2), keepdims=True), ((3, 4, 2),)),
        OpSpec("mean", lambda x: np.mean(x, axis=0), ((3, 4),)),
        OpSpec("max", lambda x: np.max(x, axis=-1, keepdims=True), ((3, 4),)),
        OpSpec("min", lambda x: x.min(axis=0), ((3, 4),)),
        OpSpec("prod", lambda x: np.prod(x, axis=1), ((3, 4),), "positive"),
        OpSpec("var", lambda x: np.var(x, axis=1), ((3, 4),)),
        OpSpec("std_ddof", lambda x: x.std(ddof=1), ((3, 4),)),
        OpSpec("reshape", lambda x: x.reshape(2, -1), ((3, 4),)),
        OpSpec("transpose", lambda x: np.transpose(x, (2, 0, 1)), ((2, 3, 4),)),
        OpSpec("T", lambda x: x.T, ((3, 4),)),
        OpSpec("swapaxes", lambda x: np.swapaxes(x, 0, 2), ((2, 3, 4),)),
        OpSpec("expand_dims", lambda x: np.expand_dims(x, 1), ((3, 4),)),
        OpSpec("squeeze", lambda x: np.squeeze(x, axis=1), ((3, 1, 4),)),
        OpSpec("broadcast_to", lambda x: np.broadcast_to(x, (2, 3, 4)), ((3, 1),)),
        OpSpec("concatenate", lambda x, y: np.concatenate([x, y], axis=1), ((3, 4), (3, 2))),
        OpSpec("stack", lambda x, y: np.stack([x, y], axis=-1), ((3, 4), (3, 4))),
        OpSpec("split", lambda x: np.split(x, 2, axis=1)[1] * 2, ((3, 4),)),
        OpSpec("slice", lambda x: x[1:, ::2], ((3, 4),)),
        OpSpec("slice_newaxis", lambda x: x[None, 1, ..., 1:3], ((3, 4, 5),)),
        OpSpec("int_index", lambda x: x[-1], ((3, 4),)),
        OpSpec("take_rows", lambda x, i: x[i], ((5, 3), (4,)), int_inputs=(1,)),
        OpSpec("take_pairs", lambda x, i: x[np.arange(4), i], ((4, 5), (4,)), int_inputs=(1,)),
        OpSpec("take", lambda x, i: np.take(x, i, axis=1), ((3, 5), (2, 2)), int_inputs=(1,)),
        OpSpec("take_along_axis",
               lambda x, i: np.take_along_axis(x, i, axis=1), ((3, 5), (3, 2)), int_inputs=(1,)),
        OpSpec("astype", lambda x: x.astype(np.float64) * 2, ((3, 4),)),
        OpSpec("zeros_like", lambda x: np.zeros_like(x) + x, ((3, 4),)),
        OpSpec("ones_like", lambda x: np.ones_like(x) * x, ((3, 4),)),
        OpSpec("full_like", lambda x: np.full_like(x, 2.5) - x, ((3, 4),)),
        OpSpec("matmul", lambda x, w: x @ w, ((3, 4), (4, 2))),
        OpSpec("matmul_batched", lambda x, w: x @ w, ((2, 3, 4), (2, 4, 5))),
        OpSpec("matmul_broadcast", lambda x, w: np.matmul(x, w), ((2, 3, 4), (4, 5))),
        OpSpec("matmul_vector", lambda x, v: x @ v, ((3, 4), (4,))),
        OpSpec("dot", lambda x, w: np.dot(x, w), ((3, 4), (4, 2))),
        OpSpec("outer", lambda x, y: np.outer(x, y), ((3,), (4,))),
        OpSpec("einsum_matmul", lambda x, w: np.einsum("ij,jk->ik", x, w), ((3, 4), (4, 2))),
        OpSpec("einsum_batch", lambda q, k: np.einsum("bqd,bkd->bqk", q, k),
               ((2, 3, 4), (2, 5, 4))),
        OpSpec("einsum_trace_sum", lambda x: np.einsum("ij->j", x), ((3, 4),)),
        OpSpec("einsum_three", lambda a, b, c: np.einsum("ij,jk,k->i", a, b, c),
               ((3, 4), (4, 5), (5,))),
        OpSpec("scalar_promotion", lambda x: 2 * x + 1.5, ((3, 4),)),
        OpSpec("neg_operator", lambda x: -x + abs(x), ((3, 4),)),
        OpSpec("softmax", lambda x: np.exp(x - x.max(1, keepdims=True))
               / np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True), ((3, 4),)),
    ]
)
