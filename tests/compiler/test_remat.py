"""Rematerialisation (compiler/passes/remat.py): the min cut recomputes cheap forward values
(relu outputs, one-hot masks) in the backward instead of holding them; the graph keeps its
meaning, fusion keeps the copies in backward kernels, and the planned peak falls."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile, nn, value_and_grad
from compiler.codegen import plan_buffers
from compiler.cost_model import planned_arena_bytes
from compiler.passes.fuse import fuse_elementwise
from compiler.passes.remat import (
    RECOMPUTED_NOTE,
    backward_nodes,
    choose_saved_values,
    rematerialize_cheap_values,
)
from compiler.pipeline import lower, prepare_for_fusion
from compiler.pytree import tree_flatten
from ir.graph import Graph, Role
from ir.interpreter import evaluate
from ir.ops import Op
from ir.verifier import verify
from tests.compiler.test_fusion import check_fused_contract

F32 = np.float32


def deep_mlp_loss(params, x, y):
    h = x
    for i in range(3):
        h = np.maximum(h @ params[f"w{i}"] + params[f"b{i}"], 0.0)
    return nn.cross_entropy(h @ params["wo"] + params["bo"], y)


def deep_mlp_args():
    rng = np.random.default_rng(0)

    def normal(*shape):
        return rng.normal(0, 0.3, shape).astype(F32)

    params = {"w0": normal(16, 32), "b0": normal(32), "w1": normal(32, 32), "b1": normal(32),
              "w2": normal(32, 32), "b2": normal(32), "wo": normal(32, 5), "bo": normal(5)}
    return params, normal(8, 16), rng.integers(0, 5, 8)


def prepared(fn, args) -> Graph:
    """The graph rematerialisation sees in the pipeline (after prepare_for_fusion)."""
    graph = compile(fn).trace(*args).graph
    return prepare_for_fusion(lower(graph, "optimized"))


def assert_same_results(before: Graph, after: Graph, args) -> None:
    verify(after)
    leaves, _ = tree_flatten(args)
    for want, got in zip(evaluate(before, leaves), evaluate(after, leaves), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_remat_recomputes_relu_outputs_and_keeps_meaning():
    args = deep_mlp_args()
    graph = prepared(value_and_grad(deep_mlp_loss), args)
    result = rematerialize_cheap_values(graph, planned_arena_bytes)
    assert result is not graph
    copies = [n for n in result.nodes if n.role is Role.RECOMPUTED]
    assert {n.op for n in copies} >= {Op.MAX}
    assert all(n.note.startswith(RECOMPUTED_NOTE) for n in copies)  # and printouts say so
    assert_same_results(graph, result, args)


def test_remat_asks_its_cost_model_and_runs_no_later_stage():
    # the pass keeps a recomputation exactly when the cost model prices it lower by more than
    # MIN_SAVING; it is handed the model (compiler/pipeline.py) and runs no fusion or codegen
    graph = prepared(value_and_grad(deep_mlp_loss), deep_mlp_args())
    priced: list[Graph] = []

    def cheaper_when_recomputed(g: Graph) -> int:
        priced.append(g)
        return 100 if g is graph else 50

    kept = rematerialize_cheap_values(graph, cheaper_when_recomputed)
    assert kept is not graph and priced == [graph, kept]
    assert rematerialize_cheap_values(graph, lambda g: 100) is graph  # no saving: unchanged


def test_remat_saves_the_pre_activation_not_the_relu_output():
    graph = prepared(value_and_grad(deep_mlp_loss), deep_mlp_args())
    saved, recomputed = choose_saved_values(graph)
    producers = graph.producers()
    assert all(producers[v].op == Op.MAX for v in recomputed if producers[v].op != Op.CONSTANT
               and producers[v].op != Op.BROADCAST_TO)
    assert not any(producers[v].op == Op.MAX for v in saved if v in producers)


def test_remat_lowers_the_planned_peak_of_a_deep_mlp_step():
    args = deep_mlp_args()
    graph = prepared(value_and_grad(deep_mlp_loss), args)
    without = plan_buffers(fuse_elementwise(graph))
    fused = fuse_elementwise(rematerialize_cheap_values(graph, planned_arena_bytes))
    check_fused_contract(fused)
    with_remat = plan_buffers(fused)
    # three relu outputs [8,32] are no longer held from the forward into the backward
    assert with_remat.arena_bytes < without.arena_bytes
    assert with_remat.peak_live_bytes < without.peak_live_bytes


def test_remat_copies_join_backward_kernels_only():
    args = deep_mlp_args()
    fused = lower(compile(value_and_grad(deep_mlp_loss)).trace(*args).graph, "fused")
    for node in fused.nodes:
        if node.op != Op.FUSED:
            continue
        roles = [n.role for n in node.params["body"].nodes if n.op not in (
            Op.CONSTANT, Op.BROADCAST_TO)]
        if Role.RECOMPUTED in roles:
            assert Role.FORWARD not in roles, roles


def test_remat_leaves_graphs_without_backward_alone():
    args = deep_mlp_args()
    graph = prepared(deep_mlp_loss, args)
    assert not backward_nodes(graph)
    assert rematerialize_cheap_values(graph, planned_arena_bytes) is graph


def test_remat_keeps_a_change_only_when_the_peak_falls():
    # one hidden layer: recomputing relu(z) holds as much at the backward's peak as before
    def loss(params, x, y):
        h = np.maximum(x @ params["w0"] + params["b0"], 0.0)
        return nn.cross_entropy(h @ params["wo"] + params["bo"], y)

    params, x, y = deep_mlp_args()
    graph = prepared(value_and_grad(loss), (params, x, y))
    _, recomputed = choose_saved_values(graph)
    assert any(graph.producers()[v].op == Op.MAX for v in recomputed)  # the cut would
    # but the plan's peak would not fall
    assert rematerialize_cheap_values(graph, planned_arena_bytes) is graph


@pytest.mark.slow  # a cold Numba compile of a 4-matmul step: about 30 s on a busy machine
def test_pipeline_with_remat_runs_on_numba_like_the_interpreter():
    args = deep_mlp_args()
    want = compile(value_and_grad(deep_mlp_loss), backend="interpreter")(*args)
    got = compile(value_and_grad(deep_mlp_loss))(*args)
    for a, b in zip(tree_flatten(got)[0], tree_flatten(want)[0], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_remat_of_a_backward_reading_nothing_across_a_barrier_is_identity():
    # regression: no held reads (one loop holds forward and backward) left the flow network
    # without a sink
    def f(x):
        return np.sum(np.tanh(x))

    x = np.linspace(-1, 1, 8).astype(F32)
    graph = prepared(lambda x: value_and_grad(f)(x)[1] * 2.0, (x,))
    assert backward_nodes(graph)
    assert choose_saved_values(graph) == (set(), set())
    assert rematerialize_cheap_values(graph, planned_arena_bytes) is graph
