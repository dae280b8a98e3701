"""Every pass keeps a graph's meaning, on hypothesis-drawn random graphs: random elementwise,
broadcast, reduce, matmul, transpose and reshape nodes over a few inputs, with the constants
and double negations/transposes that make the rewrites fire. The interpreter must give the
same results before and after each pass, and the verifier must accept the result."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from compiler.passes.cse import eliminate_common_subexpressions
from compiler.passes.dce import eliminate_dead_code
from compiler.passes.fold_constants import fold_constants
from compiler.passes.fuse import fuse_elementwise
from compiler.passes.move_work import move_work_for_fusion
from compiler.passes.simplify import simplify_algebra
from compiler.pipeline import OPTIMIZE, lower, prepare_for_fusion, rematerialize
from compiler.tracing import Trace
from ir.graph import Graph, Var
from ir.interpreter import evaluate
from ir.ops import Op
from ir.types import TensorType
from ir.verifier import verify
from tests.compiler.test_fusion import check_fused_contract

F64 = np.dtype(np.float64)
INPUT_SHAPES = [(2, 3), (3,), (2, 1), (), (3, 2), (3, 3)]
BROADCAST_TARGETS = [(2, 3), (3, 3), (4, 2, 3), (2, 2, 1), (3, 2), (2, 3, 2)]
UNARY = [Op.NEG, Op.NEG, Op.TANH, Op.SIN, Op.ABS, Op.LOGISTIC, Op.EXP, Op.STOP_GRADIENT]
BINARY = [Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MAX, Op.MIN]
SCALARS = [0.0, 1.0, -1.0, 2.5]
KINDS = ["unary", "binary", "negated", "scalar", "broadcast", "reduce", "transpose", "reshape",
         "matmul",
         "where", "cast"]


def emit(trace: Trace, op: Op, *inputs: Var, **params) -> Var:
    (out,) = trace.emit(op, inputs, params)
    return out


def _same_shape_operand(draw, trace: Trace, pool: list[Var], x: Var) -> Var:
    candidates = [v for v in pool if v.shape == x.shape]
    broadcastable = [v for v in pool if v.ndim <= x.ndim and _broadcasts(v.shape, x.shape)]
    y = draw(st.sampled_from(candidates + broadcastable))
    return y if y.shape == x.shape else emit(trace, Op.BROADCAST_TO, y, shape=x.shape)


def _broadcasts(source: tuple[int, ...], target: tuple[int, ...]) -> bool:
    try:
        return np.broadcast_shapes(source, target) == target
    except ValueError:
        return False


def _step(draw, trace: Trace, pool: list[Var]) -> Var:
    kind = draw(st.sampled_from(KINDS))
    x = draw(st.sampled_from(pool))
    if kind == "unary":
        return emit(trace, draw(st.sampled_from(UNARY)), x)
    if kind == "cast":
        return emit(trace, Op.CAST, x, dtype=F64)
    if kind == "binary":
        y = _same_shape_operand(draw, trace, pool, x)
        a, b = draw(st.permutations([x, y]))
        return emit(trace, draw(st.sampled_from(BINARY)), a, b)
    if kind == "negated":  # x op neg(y) or neg(x) op y: the negation-folding rewrites
        y = emit(trace, Op.NEG, _same_shape_operand(draw, trace, pool, x))
        a, b = draw(st.permutations([x, y]))
        return emit(trace, draw(st.sampled_from(BINARY[:4])), a, b)
    if kind == "scalar":  # x op c, c often an identity element
        c = trace.constant(np.asarray(draw(st.sampled_from(SCALARS)), F64))
        if x.ndim:
            c = emit(trace, Op.BROADCAST_TO, c, shape=x.shape)
        a, b = draw(st.permutations([x, c]))
        return emit(trace, draw(st.sampled_from(BINARY[:4])), a, b)
    if kind == "where":
        y = _same_shape_operand(draw, trace, pool, x)
        return emit(trace, Op.WHERE, emit(trace, Op.LT, x, y), x, y)
    if kind == "broadcast":
        targets = [s for s in BROADCAST_TARGETS + [x.shape] if _broadcasts(x.shape, s)]
        return emit(trace, Op.BROADCAST_TO, x, shape=draw(st.sampled_from(targets)))
    if kind == "reduce" and x.ndim:
        axes = draw(st.lists(st.integers(0, x.ndim - 1), max_size=x.ndim, unique=True))
        op = draw(st.sampled_from([Op.REDUCE_SUM, Op.REDUCE_MAX]))
        return emit(trace, op, x, axes=tuple(sorted(axes)))
    if kind == "transpose" and x.ndim:
        perm = draw(st.sampled_from(list(itertools.permutations(range(x.ndim)))))
        return emit(trace, Op.TRANSPOSE, x, perm=perm)
    if kind == "reshape":
        shapes = [(x.type.size,), (1, *x.shape), x.shape[::-1], x.shape]
        return emit(trace, Op.RESHAPE, x, shape=draw(st.sampled_from(shapes)))
    if kind == "matmul" and x.ndim == 2:
        partners = [v for v in pool if v.ndim == 2 and v.shape[0] == x.shape[1]]
        w = draw(st.sampled_from(partners)) if partners else emit(
            trace, Op.TRANSPOSE, x, perm=(1, 0))
        return emit(trace, Op.MATMUL, x, w)
    return emit(trace, Op.NEG, x)


@st.composite
def random_graphs(draw) -> Graph:
    trace = Trace()
    shapes = draw(st.lists(st.sampled_from(INPUT_SHAPES), min_size=1, max_size=3))
    pool = [trace.new_input(TensorType(s, F64)).ir_var for s in shapes]
    for _ in range(draw(st.integers(1, 14))):
        pool.append(_step(draw, trace, pool))
    # every value nobody reads is an output, so every node drawn is live
    read = {v for node in trace.nodes for v in node.inputs}
    sinks = [v for node in trace.nodes for v in node.outputs if v not in read]
    extra = draw(st.lists(st.sampled_from(pool), max_size=1))
    return trace.to_graph([*sinks, *extra])


def inputs_for(graph: Graph, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-2.0, 2.0, v.shape) for v in graph.inputs]


def assert_same_meaning(before: Graph, after: Graph) -> None:
    verify(after)
    args = inputs_for(before)
    for want, got in zip(evaluate(before, args), evaluate(after, args), strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True)


PASSES = [simplify_algebra, fold_constants, eliminate_common_subexpressions,
          eliminate_dead_code, move_work_for_fusion, prepare_for_fusion,
          rematerialize, fuse_elementwise]


@given(random_graphs())
def test_each_pass_keeps_the_meaning_of_random_graphs(graph):
    verify(graph)
    for run_pass in PASSES:
        assert_same_meaning(graph, run_pass(graph))


@given(random_graphs())
def test_pipeline_keeps_the_meaning_of_random_graphs(graph):
    optimized = lower(graph, "optimized", check=True)
    assert_same_meaning(graph, optimized)
    assert len(optimized.nodes) <= len(graph.nodes) + 2
    fused = lower(graph, "fused", check=True)
    assert_same_meaning(graph, fused)
    check_fused_contract(fused)


@given(random_graphs())
def test_fusion_of_random_graphs_keeps_the_contract(graph):
    fused = fuse_elementwise(graph)
    check_fused_contract(fused)
    assert_same_meaning(graph, fused)


@given(random_graphs())
def test_optimize_reaches_a_fixed_point_on_random_graphs(graph):
    (optimize,) = OPTIMIZE
    once = optimize(graph)
    assert optimize(once) is once
