"""The OPTIMIZE passes one by one: each rewrite in the table fires on its pattern and keeps the
graph's meaning (interpreter before == after), the verifier passes, and the pipeline leaves
example models (an MLP loss, softmax) correct and smaller."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile, value_and_grad
from compiler.passes.cse import eliminate_common_subexpressions
from compiler.passes.dce import eliminate_dead_code
from compiler.passes.fold_constants import MAX_FOLDED_ELEMENTS, fold_constants
from compiler.passes.simplify import SIMPLIFY_RULES, simplify_algebra
from compiler.pipeline import OPTIMIZE, lower, prepare_for_fusion
from compiler.pytree import tree_flatten
from compiler.tracing import Trace
from ir.graph import Graph, Var
from ir.interpreter import evaluate
from ir.ops import Op
from ir.types import TensorType
from ir.verifier import verify
from tests.compiler.test_fusion import mlp_loss

F64 = np.dtype(np.float64)


def build(fn, *shapes) -> Graph:
    """A graph from `fn(trace, *input_vars) -> output vars`, emitting IR nodes directly."""
    trace = Trace()
    inputs = [trace.new_input(TensorType(s, F64)).ir_var for s in shapes]
    outputs = fn(trace, *inputs)
    return trace.to_graph(outputs if isinstance(outputs, list) else [outputs])


def emit(trace: Trace, op: Op, *inputs: Var, **params) -> Var:
    (out,) = trace.emit(op, inputs, params)
    return out


def scalar(trace: Trace, value, shape) -> Var:
    c = trace.constant(np.asarray(value, F64))
    return emit(trace, Op.BROADCAST_TO, c, shape=shape) if shape else c


def assert_same_meaning(before: Graph, after: Graph, seed: int = 0) -> None:
    verify(after)
    rng = np.random.default_rng(seed)
    args = [rng.uniform(0.5, 2.0, v.shape) for v in before.inputs]
    for want, got in zip(evaluate(before, args), evaluate(after, args)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def ops_of(graph: Graph) -> list[str]:
    return [n.op.value for n in graph.nodes]


def optimized(graph: Graph) -> Graph:
    return eliminate_dead_code(simplify_algebra(graph))


S = (2, 3)
# name -> (graph builder, the ops left after simplify + DCE)
REWRITE_CASES = {
    "x*1": (lambda t, x: emit(t, Op.MUL, x, scalar(t, 1.0, S)), []),
    "1*x": (lambda t, x: emit(t, Op.MUL, scalar(t, 1.0, S), x), []),
    "x+0": (lambda t, x: emit(t, Op.ADD, x, scalar(t, 0.0, S)), []),
    "0+x": (lambda t, x: emit(t, Op.ADD, scalar(t, 0.0, S), x), []),
    "x-0": (lambda t, x: emit(t, Op.SUB, x, scalar(t, 0.0, S)), []),
    "0-x": (lambda t, x: emit(t, Op.SUB, scalar(t, 0.0, S), x), ["neg"]),
    "x/1": (lambda t, x: emit(t, Op.DIV, x, scalar(t, 1.0, S)), []),
    "x**1": (lambda t, x: emit(t, Op.POW, x, scalar(t, 1.0, S)), []),
    "x*-1": (lambda t, x: emit(t, Op.MUL, x, scalar(t, -1.0, S)), ["neg"]),
    "neg(neg(x))": (lambda t, x: emit(t, Op.NEG, emit(t, Op.NEG, x)), []),
    "x-neg(y)": (lambda t, x, y: emit(t, Op.SUB, x, emit(t, Op.NEG, y)), ["add"]),
    "x+neg(y)": (lambda t, x, y: emit(t, Op.ADD, x, emit(t, Op.NEG, y)), ["sub"]),
    "neg(x)+y": (lambda t, x, y: emit(t, Op.ADD, emit(t, Op.NEG, x), y), ["sub"]),
    "neg(x)*neg(y)": (
        lambda t, x, y: emit(t, Op.MUL, emit(t, Op.NEG, x), emit(t, Op.NEG, y)), ["mul"]),
    "x*neg(y)": (lambda t, x, y: emit(t, Op.MUL, x, emit(t, Op.NEG, y)), ["mul", "neg"]),
    "neg(x)/y": (lambda t, x, y: emit(t, Op.DIV, emit(t, Op.NEG, x), y), ["div", "neg"]),
    "neg(x-y)": (lambda t, x, y: emit(t, Op.NEG, emit(t, Op.SUB, x, y)), ["sub"]),
    "max(x,x)": (lambda t, x: emit(t, Op.MAX, x, x), []),
    "where(c,x,x)": (
        lambda t, x, y: emit(t, Op.WHERE, emit(t, Op.LT, x, y), x, x), []),
    "stop_gradient(x)": (lambda t, x: emit(t, Op.STOP_GRADIENT, x), []),
    "cast(x) same dtype": (lambda t, x: emit(t, Op.CAST, x, dtype=F64), []),
    "transpose(transpose(x))": (
        lambda t, x: emit(t, Op.TRANSPOSE, emit(t, Op.TRANSPOSE, x, perm=(1, 0)), perm=(1, 0)),
        []),
    "transpose identity": (lambda t, x: emit(t, Op.TRANSPOSE, x, perm=(0, 1)), []),
    "reshape(reshape(x))": (
        lambda t, x: emit(t, Op.RESHAPE, emit(t, Op.RESHAPE, x, shape=(6,)), shape=(3, 2)),
        ["reshape"]),
    "reshape same shape": (lambda t, x: emit(t, Op.RESHAPE, x, shape=S), []),
    "broadcast same shape": (lambda t, x: emit(t, Op.BROADCAST_TO, x, shape=S), []),
    "broadcast(broadcast(x))": (
        lambda t, x: emit(t, Op.BROADCAST_TO, emit(t, Op.BROADCAST_TO, x, shape=(4, 2, 3)),
                          shape=(5, 4, 2, 3)), ["broadcast_to"]),
    "reduce_sum(broadcast(x)) over the copied axes": (
        lambda t, x: emit(t, Op.REDUCE_SUM, emit(t, Op.BROADCAST_TO, x, shape=(4, 2, 3)),
                          axes=(0,)), ["constant", "broadcast_to", "mul"]),
    "reduce_sum(broadcast(x)) over a size-1 axis": (
        lambda t, x: emit(t, Op.REDUCE_SUM, emit(
            t, Op.BROADCAST_TO, emit(t, Op.RESHAPE, x, shape=(2, 1, 3)), shape=(2, 5, 3)),
            axes=(1,)), ["reshape", "reshape", "constant", "broadcast_to", "mul"]),
    "reduce_max(broadcast(x))": (
        lambda t, x: emit(t, Op.REDUCE_MAX, emit(t, Op.BROADCAST_TO, x, shape=(4, 2, 3)),
                          axes=(0,)), []),
    "reduce_sum(neg(x))": (
        lambda t, x: emit(t, Op.REDUCE_SUM, emit(t, Op.NEG, x), axes=(1,)),
        ["reduce_sum", "neg"]),
    "reduce over no axes": (lambda t, x: emit(t, Op.REDUCE_SUM, x, axes=()), []),
    "transpose(broadcast(scalar))": (
        lambda t, x: emit(t, Op.MUL, x, emit(t, Op.TRANSPOSE, scalar(t, 2.0, (3, 2)),
                                             perm=(1, 0))),
        ["constant", "broadcast_to", "mul"]),
}


@pytest.mark.parametrize("name", sorted(REWRITE_CASES))
def test_simplify_rewrite_fires_and_keeps_meaning(name):
    fn, expected_ops = REWRITE_CASES[name]
    arity = fn.__code__.co_argcount - 1
    graph = build(fn, *[S] * arity)
    simplified = optimized(graph)
    assert ops_of(simplified) == expected_ops, f"{name}: {ops_of(simplified)}"
    assert_same_meaning(graph, simplified)


def test_simplify_every_rule_has_its_algebra_comment():
    import inspect

    from compiler.passes import simplify

    table = inspect.getsource(simplify).split("SIMPLIFY_RULES: dict")[1]
    rule_lines = [line for line in table.splitlines() if line.strip().startswith("_")]
    assert rule_lines, "the rewrite table is empty"
    assert all("->" in line.split("#", 1)[-1] for line in rule_lines if "#" in line)
    assert all("#" in line for line in rule_lines), "a rewrite lacks its algebra comment"
    assert set(SIMPLIFY_RULES) >= {Op.ADD, Op.MUL, Op.NEG, Op.TRANSPOSE, Op.REDUCE_SUM}


def test_simplify_keeps_reduce_sum_of_broadcast_over_distinct_values():
    # axis 1 holds distinct values of x, so the sum is not a multiply
    graph = build(lambda t, x: emit(t, Op.REDUCE_SUM, emit(
        t, Op.BROADCAST_TO, x, shape=(4, 2, 3)), axes=(0, 2)), S)
    simplified = optimized(graph)
    assert "reduce_sum" in ops_of(simplified)
    assert_same_meaning(graph, simplified)


def test_simplify_keeps_shared_negation():
    # neg(y) is read twice: pushing it out of x*neg(y) would add a node, not remove one
    def fn(t, x, y):
        n = emit(t, Op.NEG, y)
        return [emit(t, Op.MUL, x, n), emit(t, Op.EXP, n)]

    graph = build(fn, S, S)
    assert simplify_algebra(graph) is graph


def optimize(graph: Graph) -> Graph:
    for run_pass in OPTIMIZE:
        graph = run_pass(graph)
    return graph


def test_simplify_transpose_of_matmul_cancels_a_transpose():
    # transpose(transpose(a) @ b) = transpose(b) @ a over the last two axes: the dK of
    # attention's q @ k.T, a transposed product a reshape then copied
    last_two = (0, 2, 1)

    def fn(t, a, b):
        product = emit(t, Op.MATMUL, emit(t, Op.TRANSPOSE, a, perm=last_two), b)
        return emit(t, Op.TRANSPOSE, product, perm=last_two)

    graph = build(fn, (2, 3, 4), (2, 3, 5))
    simplified = optimize(graph)
    assert sorted(ops_of(simplified)) == ["matmul", "transpose"]
    assert simplified.nodes[-1].inputs[1] is graph.inputs[0]  # transpose(b) @ a
    assert_same_meaning(graph, simplified)


def test_simplify_keeps_transpose_of_matmul_that_would_not_cancel():
    def plain(t, a, b):  # no transposed operand: two transposes would replace one
        return emit(t, Op.TRANSPOSE, emit(t, Op.MATMUL, a, b), perm=(1, 0))

    def shared(t, a, b):  # the product is read again: a second matmul
        product = emit(t, Op.MATMUL, emit(t, Op.TRANSPOSE, a, perm=(1, 0)), b)
        return [emit(t, Op.TRANSPOSE, product, perm=(1, 0)), product]

    for fn, shapes in ((plain, ((2, 3), (3, 4))), (shared, ((3, 2), (3, 4)))):
        graph = build(fn, *shapes)
        assert simplify_algebra(graph) is graph


def test_simplify_returns_the_same_graph_when_nothing_applies():
    graph = build(lambda t, x: emit(t, Op.EXP, x), S)
    assert simplify_algebra(graph) is graph


def test_fold_constants_evaluates_small_constant_subgraphs():
    def fn(t, x):
        c = t.constant(np.arange(6.0).reshape(2, 3))
        return emit(t, Op.ADD, x, emit(t, Op.EXP, emit(t, Op.NEG, c)))

    graph = build(fn, S)
    folded = eliminate_dead_code(fold_constants(graph))
    assert ops_of(folded) == ["constant", "add"]
    assert_same_meaning(graph, folded)


def test_fold_constants_leaves_large_results_and_broadcasts_alone():
    n = MAX_FOLDED_ELEMENTS + 1

    def fn(t, x):
        big = emit(t, Op.EXP, t.constant(np.zeros(n)))
        two = emit(t, Op.BROADCAST_TO, t.constant(np.float64(2)), shape=(n,))
        return [emit(t, Op.ADD, x, two), big]

    graph = build(fn, (n,))
    assert fold_constants(graph) is graph


def test_fold_constants_folds_elementwise_ops_over_broadcast_constants():
    # neg(broadcast_to(c)) -> broadcast_to(-c): no kernel left computing a constant
    def fn(t, x):
        c = emit(t, Op.NEG, scalar(t, 0.25, S))
        row = emit(t, Op.BROADCAST_TO, t.constant(np.arange(3.0)), shape=S)
        return emit(t, Op.ADD, x, emit(t, Op.MUL, c, row))

    graph = build(fn, S)
    folded = eliminate_dead_code(fold_constants(graph))
    assert ops_of(folded) == ["constant", "broadcast_to", "add"]
    assert folded.nodes[0].params["value"].shape == (3,)
    assert_same_meaning(graph, folded)


def test_cse_merges_equal_nodes_including_commuted_operands():
    def fn(t, x, y):
        a = emit(t, Op.ADD, x, y)
        b = emit(t, Op.ADD, y, x)
        c = emit(t, Op.TRANSPOSE, a, perm=(1, 0))
        d = emit(t, Op.TRANSPOSE, b, perm=(1, 0))
        return [emit(t, Op.MUL, c, d)]

    graph = build(fn, S, S)
    merged = eliminate_dead_code(eliminate_common_subexpressions(graph))
    assert ops_of(merged) == ["add", "transpose", "mul"]
    assert_same_meaning(graph, merged)


def test_cse_keeps_nodes_with_different_params():
    def fn(t, x):
        return [emit(t, Op.REDUCE_SUM, x, axes=(0,)), emit(t, Op.REDUCE_SUM, x, axes=(1,))]

    graph = build(fn, S)
    assert eliminate_common_subexpressions(graph) is graph


def test_dce_drops_unused_nodes_and_keeps_outputs():
    def fn(t, x):
        emit(t, Op.EXP, emit(t, Op.TANH, x))
        return [emit(t, Op.NEG, x), x]

    graph = build(fn, S)
    assert ops_of(eliminate_dead_code(graph)) == ["neg"]
    assert_same_meaning(graph, eliminate_dead_code(graph))


def test_optimize_iterates_to_a_fixed_point():
    # each round exposes the next rewrite: fold 1*1, then x*1, then neg(neg(x)), then CSE
    def fn(t, x):
        one = emit(t, Op.MUL, t.constant(np.float64(1)), t.constant(np.float64(1)))
        y = emit(t, Op.MUL, x, emit(t, Op.BROADCAST_TO, one, shape=S))
        z = emit(t, Op.NEG, emit(t, Op.NEG, y))
        return [emit(t, Op.ADD, emit(t, Op.EXP, z), emit(t, Op.EXP, x))]

    graph = build(fn, S)
    (run,) = OPTIMIZE
    result = run(graph)
    assert ops_of(result) == ["exp", "add"]
    assert_same_meaning(graph, result)
    assert run(result) is result


def softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def mlp_args(seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "w1": rng.normal(size=(6, 5)), "b1": rng.normal(size=5),
        "w2": rng.normal(size=(5, 3)), "b2": rng.normal(size=3),
    }
    return params, rng.normal(size=(4, 6)), np.eye(3)[[0, 2, 1, 2]]


EXAMPLES = {
    "mlp loss": (mlp_loss, mlp_args),
    "mlp value_and_grad": (value_and_grad(mlp_loss), mlp_args),
    "softmax": (softmax, lambda: (np.random.default_rng(1).normal(size=(4, 7)),)),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
@pytest.mark.parametrize("stage", ["optimized", "fused"])
def test_pipeline_keeps_example_models_correct(name, stage):
    fn, make_args = EXAMPLES[name]
    args = make_args()
    graph = compile(fn).trace(*args).graph
    lowered = lower(graph, stage, check=True)
    leaves, _ = tree_flatten(args)
    for want, got in zip(evaluate(graph, leaves), evaluate(lowered, leaves)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_optimize_shrinks_the_mlp_training_graph():
    graph = compile(value_and_grad(mlp_loss)).trace(*mlp_args()).graph
    result = lower(graph, "optimized", check=True)
    assert len(result.nodes) < len(graph.nodes)
    assert not any(n.op == Op.STOP_GRADIENT for n in result.nodes)


# name -> (graph builder, input shapes, the ops left after prepare_for_fusion)
PREFUSE_CASES = {
    "op(reshape(a), reshape(b)) -> reshape(op(a, b))": (
        lambda t, x, y: emit(t, Op.MUL, emit(t, Op.RESHAPE, x, shape=(3, 1)),
                             emit(t, Op.RESHAPE, y, shape=(3, 1))),
        [(3,), (3,)], ["mul", "reshape"]),
    "broadcast(cheap op) -> cheap op(broadcasts)": (
        lambda t, x, y, z: emit(t, Op.ADD, z, emit(t, Op.BROADCAST_TO, emit(
            t, Op.RESHAPE, emit(t, Op.DIV, x, y), shape=(3, 1)), shape=(3, 4))),
        [(3,), (3,), (3, 4)],
        ["reshape", "broadcast_to", "reshape", "broadcast_to", "div", "add"]),
    "c * sum(x) -> sum(c * x)": (
        lambda t, x: emit(t, Op.NEG, emit(t, Op.DIV, emit(t, Op.REDUCE_SUM, x, axes=(0, 1)),
                                        t.constant(np.float64(4.0)))),
        [S], ["constant", "broadcast_to", "div", "neg", "reduce_sum"]),
    "sum(sum(x, A), B) -> sum(x, A + B)": (
        lambda t, x: emit(t, Op.REDUCE_SUM, emit(t, Op.REDUCE_SUM, x, axes=(1,)), axes=(0,)),
        [(2, 3, 4)], ["reduce_sum"]),
    "max(max(x, A), B) -> max(x, A + B)": (
        lambda t, x: emit(t, Op.REDUCE_MAX, emit(t, Op.REDUCE_MAX, x, axes=(0,)), axes=(1,)),
        [(2, 3, 4)], ["reduce_max"]),
}


@pytest.mark.parametrize("name", sorted(PREFUSE_CASES))
def test_prepare_for_fusion_rewrite_fires_and_keeps_meaning(name):
    fn, shapes, expected_ops = PREFUSE_CASES[name]
    graph = build(fn, *shapes)
    rewritten = prepare_for_fusion(graph)
    assert ops_of(rewritten) == expected_ops, f"{name}: {ops_of(rewritten)}"
    assert_same_meaning(graph, rewritten)


def test_prepare_for_fusion_merges_nested_reduction_axes_in_order():
    graph = build(lambda t, x: emit(t, Op.REDUCE_SUM, emit(t, Op.REDUCE_SUM, x, axes=(1,)),
                                    axes=(1,)), (2, 3, 4))
    (node,) = prepare_for_fusion(graph).nodes
    assert node.params["axes"] == (1, 2)


def test_prepare_for_fusion_keeps_broadcasts_of_costly_or_shared_values():
    def costly(t, x, z):  # exp is a libm call: computed once per row, not per element
        return emit(t, Op.ADD, z, emit(t, Op.BROADCAST_TO, emit(t, Op.EXP, x), shape=(4, 3)))

    def shared(t, x, z):  # the quotient is also returned: sinking would compute it twice
        q = emit(t, Op.DIV, x, x)
        return [emit(t, Op.ADD, z, emit(t, Op.BROADCAST_TO, q, shape=(4, 3))), q]

    for fn in (costly, shared):
        graph = build(fn, (3,), (4, 3))
        assert prepare_for_fusion(graph) is graph


def test_prepare_for_fusion_keeps_a_sum_read_twice_unscaled():
    def fn(t, x):
        total = emit(t, Op.REDUCE_SUM, x, axes=(0, 1))
        return [emit(t, Op.NEG, total), total]

    graph = build(fn, S)
    assert prepare_for_fusion(graph) is graph
