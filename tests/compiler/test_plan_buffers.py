"""Buffer planning (compiler/passes/plan_buffers.py): which values get a buffer, their live
ranges, and that buffers alive at the same time never share memory while dead ones' memory is
reused; on hand-built graphs, an MLP training step and hypothesis random graphs."""

from __future__ import annotations

import numpy as np
from hypothesis import given

from compiler import compile, value_and_grad
from compiler.passes.plan_buffers import ALIGN_BYTES, BufferPlan, plan_buffers
from compiler.pipeline import lower
from ir.graph import Graph
from ir.ops import Op
from tests.compiler.test_fusion import mlp_args, mlp_loss
from tests.compiler.test_pass_properties import random_graphs

F32 = np.float32


def assert_no_overlap(plan: BufferPlan) -> None:
    """Buffers whose live ranges intersect occupy disjoint element ranges of their arena."""
    buffers = list(plan.buffers.values())
    for i, a in enumerate(buffers):
        assert a.offset + a.size <= plan.arena_elements[a.dtype]
        assert (a.offset * a.dtype.itemsize) % ALIGN_BYTES == 0
        assert a.size >= a.var.type.size
        for b in buffers[i + 1:]:
            if a.dtype != b.dtype or a.end < b.start or b.end < a.start:
                continue
            assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)


def fused_graph(fn, *args) -> Graph:
    return lower(compile(fn).trace(*args).graph, "fused")


def test_plan_gives_chained_matmuls_two_slots_reused_in_turn():
    def chain(x, w):
        for _ in range(4):
            x = x @ w
        return x

    x = np.ones((16, 16), F32)
    plan = plan_buffers(fused_graph(chain, x, x))
    assert len(plan.buffers) == 3  # the last product is returned
    assert plan.unshared_bytes == 3 * 16 * 16 * 4
    assert plan.arena_bytes == 2 * 16 * 16 * 4  # x1 and x3 share a slot
    assert_no_overlap(plan)


def test_plan_leaves_out_inputs_outputs_constants_scalars_and_views():
    def f(x, w):
        h = np.tanh(x @ w)  # a buffer
        r = h.reshape(8, 2) * 2.0  # a view of h, read by a kernel
        return r.T @ r, np.sum(h)  # the 0-d sum is a scalar

    graph = fused_graph(f, np.ones((4, 4), F32), np.ones((4, 4), F32))
    plan = plan_buffers(graph)
    producers = graph.producers()
    planned_ops = {producers[v].op for v in plan.buffers}
    assert planned_ops <= {Op.MATMUL, Op.FUSED}
    assert not set(plan.buffers) & set(graph.outputs)
    assert not set(plan.buffers) & set(graph.inputs)
    assert all(v.ndim > 0 for v in plan.buffers)
    views = [n.out for n in graph.nodes if n.op in (Op.RESHAPE, Op.TRANSPOSE)]
    assert views and all(v in plan.views and v not in plan.buffers for v in views)
    assert_no_overlap(plan)


def test_plan_view_extends_its_base_live_range():
    def f(x, w):
        h = x @ w  # read late, through a reshape, by the last matmul
        g = np.exp(x) @ w
        return h.reshape(2, 8) @ g.reshape(8, 2)

    graph = fused_graph(f, np.ones((4, 4), F32), np.ones((4, 4), F32))
    plan = plan_buffers(graph)
    h = graph.nodes[0].out
    assert graph.nodes[0].op == Op.MATMUL
    last = max(i for i, n in enumerate(graph.nodes) if n.op == Op.MATMUL)
    assert plan.buffers[h].end == last


def test_plan_of_a_returned_view_base_escapes():
    graph = fused_graph(lambda x: np.exp(x).reshape(2, 2), np.ones(4, F32))
    assert plan_buffers(graph).buffers == {}


def test_plan_of_mlp_training_step_reuses_memory():
    graph = fused_graph(value_and_grad(mlp_loss), *mlp_args())
    plan = plan_buffers(graph)
    assert_no_overlap(plan)
    assert plan.peak_live_bytes <= plan.arena_bytes < plan.unshared_bytes
    slots = plan.slots
    assert set(slots) == set(plan.buffers)
    dtype, offset, size = next(iter(slots.values()))
    assert dtype == np.float32 and offset >= 0 and size > 0


@given(random_graphs())
def test_plan_of_random_fused_graphs_never_overlaps_live_buffers(graph):
    fused = lower(graph, "fused")
    plan = plan_buffers(fused)
    assert_no_overlap(plan)
    assert plan.peak_live_bytes <= plan.arena_bytes <= plan.unshared_bytes
    # every value a node writes, read later, is a buffer, a view, or escapes/is 0-d/constant
    producers = fused.producers()
    for var in {v for n in fused.nodes for v in n.inputs}:
        if var in producers and var not in plan.buffers and var not in plan.views:
            assert var.ndim == 0 or producers[var].op == Op.CONSTANT or any(
                plan.views.get(o, o) == var for o in fused.outputs)
