"""Every VJP rule against central differences, driven by one table of primitive specs.

The check is HIPS autograd's inner-product form, in float64: for random directions u (inputs)
and v (output), ``<u, vjp(v)>`` must equal ``<v, (f(x + eps u) - f(x - eps u)) / 2 eps>``.
One scalar comparison covers any shape. Where the op is smooth the second order is checked
the same way on ``s(x) = <u, grad <v, f(x)>>`` (grad of grad).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from compiler import all_reduce, grad, vjp
from compiler import primitives as F
from compiler.array_tracer import new_trace
from compiler.vjp_rules import NON_DIFFERENTIABLE, VJP_RULES, vjp_maths
from ir.ops import Op

IDX = np.array([[2, 0], [2, 1]])  # repeated index: scatter_add must add, not overwrite


@dataclass(frozen=True)
class PrimSpec:
    """One primitive under test: the op it must trace to and a builder over float64 arrays."""

    name: str
    op: Op
    fn: Callable
    arity: int
    shapes: str | tuple = "any"  # "any": one drawn shape; "broadcast": mutually broadcastable
    domain: str = "real"  # "real", "positive", "away" (|x| in [0.5, 2]: away from kinks)
    tol: float = 1e-6
    eps: float = 1e-6
    second_order: bool = True


PRIM_SPECS = [
    PrimSpec("negative", Op.NEG, np.negative, 1),
    PrimSpec("exp", Op.EXP, np.exp, 1),
    PrimSpec("log", Op.LOG, np.log, 1, domain="positive"),
    PrimSpec("log1p", Op.LOG1P, np.log1p, 1, domain="positive"),
    PrimSpec("expm1", Op.EXPM1, np.expm1, 1),
    PrimSpec("sqrt", Op.SQRT, np.sqrt, 1, domain="positive"),
    PrimSpec("tanh", Op.TANH, np.tanh, 1),
    PrimSpec("logistic", Op.LOGISTIC, F.sigmoid, 1),
    PrimSpec("sin", Op.SIN, np.sin, 1),
    PrimSpec("cos", Op.COS, np.cos, 1),
    PrimSpec("abs", Op.ABS, np.abs, 1, domain="away", second_order=False),
    PrimSpec("cast_f32_roundtrip", Op.CAST,
             lambda x: F.astype(F.astype(x, np.float32), np.float64) * x, 1,
             tol=1e-3, eps=1e-3),  # float32 rounding in the middle
    PrimSpec("add", Op.ADD, np.add, 2, "broadcast"),
    PrimSpec("subtract", Op.SUB, np.subtract, 2, "broadcast"),
    PrimSpec("multiply", Op.MUL, np.multiply, 2, "broadcast"),
    PrimSpec("divide", Op.DIV, np.divide, 2, "broadcast", domain="away"),
    PrimSpec("power", Op.POW, np.power, 2, "broadcast", domain="positive"),
    PrimSpec("maximum", Op.MAX, np.maximum, 2, "broadcast", domain="away", second_order=False),
    PrimSpec("minimum", Op.MIN, np.minimum, 2, "broadcast", domain="away", second_order=False),
    PrimSpec("where", Op.WHERE, lambda x, y: np.where(x > 0, x * y, y), 2, "broadcast",
             domain="away"),
    PrimSpec("broadcast_to", Op.BROADCAST_TO, lambda x: np.broadcast_to(x, (2, 3, 4)), 1,
             ((3, 1),)),
    PrimSpec("reshape", Op.RESHAPE, lambda x: np.reshape(x, (-1,)) * 1.0, 1),
    PrimSpec("transpose", Op.TRANSPOSE, lambda x: np.transpose(x, (2, 0, 1)), 1, ((2, 3, 4),)),
    PrimSpec("slice", Op.SLICE, lambda x: x[1:, ::2], 1, ((3, 5),)),
    PrimSpec("slice_step3", Op.SLICE, lambda x: x[:, 1:6:3], 1, ((2, 7),)),
    PrimSpec("pad", Op.PAD, lambda x: F.pad(x, (1, 0), (2, 1), (1, 0)), 1, ((3, 2),)),
    PrimSpec("concatenate", Op.CONCATENATE, lambda x, y: np.concatenate([x, y, x], axis=1), 2,
             ((3, 2), (3, 4))),
    PrimSpec("reduce_sum", Op.REDUCE_SUM, lambda x: np.sum(x, axis=-1), 1),
    PrimSpec("reduce_sum_keepdims", Op.REDUCE_SUM, lambda x: np.sum(x, axis=0, keepdims=True),
             1),
    PrimSpec("reduce_max", Op.REDUCE_MAX, lambda x: np.max(x, axis=-1), 1, second_order=False),
    PrimSpec("reduce_prod", Op.REDUCE_PROD, lambda x: np.prod(x, axis=-1), 1),
    PrimSpec("gather", Op.GATHER, lambda x: np.take(x, IDX, axis=1), 1, ((2, 3, 2),)),
    PrimSpec("scatter_add", Op.SCATTER_ADD, lambda x: F.scatter_add(x, IDX, 1, 4), 1,
             ((3, 2, 2),)),
    PrimSpec("matmul", Op.MATMUL, lambda x, w: x @ w, 2, ((3, 4), (4, 2))),
    PrimSpec("matmul_batched", Op.MATMUL, lambda x, w: x @ w, 2, ((2, 3, 4), (2, 4, 5))),
    PrimSpec("atan2", Op.ATAN2, np.arctan2, 2, "broadcast", domain="away"),
    PrimSpec("fmod", Op.FMOD, lambda x, y: np.fmod(3 * x, y), 2, "broadcast", domain="away",
             second_order=False),  # kinks where x / y crosses an integer
    PrimSpec("solve", Op.SOLVE, lambda a, b: np.linalg.solve(a + 3 * np.eye(3), b), 2,
             ((2, 3, 3), (2, 3, 2))),
    PrimSpec("slogdet", Op.SLOGDET, lambda a: np.linalg.slogdet(a + 3 * np.eye(3))[1], 1,
             ((2, 3, 3),)),
    PrimSpec("cholesky", Op.CHOLESKY,
             lambda a: np.linalg.cholesky(a @ np.swapaxes(a, -1, -2) + np.eye(3)), 1,
             ((2, 3, 3),)),
    PrimSpec("cholesky_lower_triangle", Op.CHOLESKY,  # NumPy reads only the lower triangle
             lambda a: np.linalg.cholesky(a + 4 * np.eye(3)), 1, ((3, 3),)),
    PrimSpec("all_reduce_sum", Op.ALL_REDUCE,  # one process: the identity
             lambda x: np.sin(all_reduce(x * x)), 1),
    PrimSpec("all_reduce_mean", Op.ALL_REDUCE,
             lambda x, y: np.tanh(all_reduce(y * x, "mean")), 2),
    PrimSpec("conv2d", Op.CONV2D, lambda x, w: F.conv2d_primitive(
        x, w, (2, 1), ((1, 0), (1, 1)), (1, 2)), 2, ((2, 2, 5, 6), (3, 2, 2, 2))),
]
SPECS = {spec.name: spec for spec in PRIM_SPECS}
SMOOTH = sorted(name for name, spec in SPECS.items() if spec.second_order)


def draw_value(rng, shape, domain):
    if domain == "positive":
        return rng.uniform(0.5, 2.0, shape)
    if domain == "away":
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)
    return rng.normal(size=shape)


def draw_inputs(spec: PrimSpec, data) -> list[np.ndarray]:
    if spec.shapes == "broadcast":
        shapes = data.draw(hnp.mutually_broadcastable_shapes(
            num_shapes=spec.arity, min_dims=0, max_dims=3, max_side=3)).input_shapes
    elif spec.shapes == "any":
        shapes = [data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))] * spec.arity
    else:
        shapes = spec.shapes
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    return [draw_value(rng, shape, spec.domain) for shape in shapes]


def inner(xs, ys) -> float:
    return float(sum(np.vdot(np.asarray(x), np.asarray(y)) for x, y in zip(xs, ys)))


def central_difference(fn, xs, us, eps) -> list[np.ndarray]:
    plus = fn(*[x + eps * u for x, u in zip(xs, us)])
    minus = fn(*[x - eps * u for x, u in zip(xs, us)])
    return (np.asarray(plus) - np.asarray(minus)) / (2 * eps)


def assert_close(got: float, expected: float, tol: float, what: str) -> None:
    assert abs(got - expected) <= tol * max(1.0, abs(expected)), f"{what}: {got} vs {expected}"


def traced_ops(fn, xs) -> set[Op]:
    trace = new_trace()
    fn(*[trace.new_input(F.wrap(trace, trace.constant(x)).ir_var.type) for x in xs])
    return {node.op for node in trace.nodes}


# -- the tables are complete --------------------------------------------------------------


def test_vjp_table_covers_every_op_once():
    for op in Op:
        assert (op in VJP_RULES) != (op in NON_DIFFERENTIABLE), op


def test_vjp_rules_carry_their_maths():
    for op in VJP_RULES:
        if op not in (Op.FUSED, Op.GEMM, Op.SCAN, Op.WHILE):  # not rules: raise, or loops_vjp
            assert vjp_maths(op), f"{op}: the rule's return has no maths comment"
    assert vjp_maths(Op.MATMUL) == ("dX = G Wᵀ", "dW = Xᵀ G")


def test_prim_specs_cover_every_differentiable_primitive():
    covered = {spec.op for spec in PRIM_SPECS}
    # FUSED and GEMM exist only after autodiff; loops: test_loops.py
    assert covered == set(VJP_RULES) - {Op.FUSED, Op.GEMM, Op.SCAN, Op.WHILE}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_prim_spec_traces_to_its_primitive(name):
    spec = SPECS[name]
    shapes = spec.shapes if isinstance(spec.shapes, tuple) else [(2, 3)] * spec.arity
    xs = [draw_value(np.random.default_rng(0), s, spec.domain) for s in shapes]
    assert spec.op in traced_ops(spec.fn, xs)


# -- first and second order against central differences ------------------------------------


@pytest.mark.parametrize("name", sorted(SPECS))
@settings(max_examples=8)
@given(data=st.data())
def test_vjp_matches_finite_differences(name, data):
    spec = SPECS[name]
    xs = draw_inputs(spec, data)
    rng = np.random.default_rng(1)
    out, vjp_fn = vjp(spec.fn, *xs)
    us = [rng.normal(size=np.shape(x)) for x in xs]
    v = rng.normal(size=np.shape(out))
    cts = vjp_fn(v)
    assert [np.shape(c) for c in cts] == [np.shape(x) for x in xs]
    assert all(np.asarray(c).dtype == np.float64 for c in cts)
    expected = inner([v], [central_difference(spec.fn, xs, us, spec.eps)])
    assert_close(inner(us, cts), expected, spec.tol, name)


@pytest.mark.parametrize("name", SMOOTH)
@settings(max_examples=4)
@given(data=st.data())
def test_vjp_second_order_matches_finite_differences(name, data):
    spec = SPECS[name]
    xs = draw_inputs(spec, data)
    rng = np.random.default_rng(2)
    v = rng.normal(size=np.shape(spec.fn(*xs)))
    us = [rng.normal(size=np.shape(x)) for x in xs]
    argnums = tuple(range(spec.arity))

    def directional(*xs):  # s(x) = <u, grad <v, f(x)>>
        grads = grad(lambda *xs: np.sum(spec.fn(*xs) * v), argnums)(*xs)
        return sum(np.sum(g * u) for g, u in zip(grads, us))

    ws = [rng.normal(size=np.shape(x)) for x in xs]
    hessian_ws = grad(directional, argnums)(*xs)
    expected = float(central_difference(directional, xs, ws, max(spec.eps, 1e-5)))
    assert_close(inner(ws, hessian_ws), expected, max(spec.tol, 1e-5), name)


# -- conventions at non-differentiable points (documented in compiler/vjp_rules.py) ---------


def test_maximum_tie_splits_gradient_half_half():
    dx, dy = grad(lambda x, y: np.sum(np.maximum(x, y)), (0, 1))(np.ones(3), np.ones(3))
    np.testing.assert_array_equal(dx, [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(dy, [0.5, 0.5, 0.5])


def test_relu_at_zero_gets_half():
    g = grad(lambda x: np.sum(np.maximum(x, 0.0)))(np.array([-1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(g, [0.0, 0.5, 1.0])


def test_reduce_max_ties_share_gradient_equally():
    g = grad(lambda x: np.max(x))(np.array([1.0, 3.0, 3.0, 2.0]))
    np.testing.assert_array_equal(g, [0.0, 0.5, 0.5, 0.0])


def test_abs_at_zero_has_zero_gradient():
    g = grad(lambda x: np.sum(np.abs(x)))(np.array([-2.0, 0.0, 3.0]))
    np.testing.assert_array_equal(g, [-1.0, 0.0, 1.0])


def test_reduce_prod_with_zeros_is_exact():
    g = grad(lambda x: np.prod(x))(np.array([2.0, 0.0, 3.0]))
    np.testing.assert_array_equal(g, [0.0, 6.0, 0.0])
    g = grad(lambda x: np.prod(x))(np.array([0.0, 0.0, 3.0]))
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.0])


def test_power_at_zero_base_is_finite():
    dx, dy = grad(lambda x, y: np.sum(x**y), (0, 1))(np.array([0.0, 2.0]), np.array([2.0, 0.0]))
    np.testing.assert_allclose(dx, [0.0, 0.0])
    np.testing.assert_allclose(dy, [0.0, np.log(2.0)])


def test_cast_to_integer_has_no_gradient():
    g = grad(lambda x: np.sum(x.astype(np.int64) * 2.0 + x))(np.array([1.5, 2.5]))
    np.testing.assert_array_equal(g, [1.0, 1.0])
