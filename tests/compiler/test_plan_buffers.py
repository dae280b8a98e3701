"""Buffer planning (compiler/codegen/plan.py, the plan the generated driver uses):
which values get a work buffer, their live ranges through views, and that buffers alive at
the same time never share memory while dead ones' memory is reused; on small graphs, an MLP
training step and hypothesis random graphs."""

from __future__ import annotations

import numpy as np
from hypothesis import given

from compiler import compile, value_and_grad
from compiler.codegen import plan_buffers
from compiler.codegen.plan import ALIGN, BufferPlan, live_ranges
from compiler.pipeline import lower
from ir.graph import Graph
from ir.ops import Op
from tests.compiler.test_fusion import mlp_args, mlp_loss
from tests.compiler.test_pass_properties import random_graphs

F32 = np.float32


def assert_no_overlap(plan: BufferPlan) -> None:
    """Buffers whose live ranges intersect occupy disjoint element ranges of their workspace,
    and the slots are what the driver lays out."""
    buffers = plan.buffers
    assert sorted(b.id for s in plan.slots.values() for slot in s for b in slot) == \
        sorted(b.id for b in buffers)
    for i, a in enumerate(buffers):
        assert a.offset + a.size <= plan.totals[a.dtype]
        assert a.offset % ALIGN == 0 and a.start <= a.end
        assert a.size == a.var.type.size and a.dtype == a.var.dtype
        for b in buffers[i + 1:]:
            if a.dtype != b.dtype or a.end < b.start or b.end < a.start:
                continue
            assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)


def buffer_of(plan: BufferPlan, var):
    (buffer,) = [b for b in plan.buffers if b.var is var]
    return buffer


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
    planned = {b.var for b in plan.buffers if not b.name.endswith("_c")}  # not copies
    assert {producers[v].op for v in planned} <= {Op.MATMUL, Op.FUSED}
    assert not planned & set(graph.outputs)
    assert not planned & set(graph.inputs)
    assert all(v.ndim > 0 for v in planned)
    _, views = live_ranges(graph)
    reshaped = [n.out for n in graph.nodes if n.op is Op.RESHAPE]
    assert reshaped and all(v in views and v not in planned for v in reshaped)
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
    assert buffer_of(plan, h).end == last


def test_plan_of_a_returned_view_base_lives_until_the_driver_copies_it_out():
    graph = fused_graph(lambda x: np.exp(x).reshape(2, 2), np.ones(4, F32))
    (buffer,) = plan_buffers(graph).buffers
    assert buffer.var is graph.nodes[0].out and graph.outputs[0] is not buffer.var
    assert (buffer.start, buffer.end) == (0, len(graph.nodes))  # read by the epilogue


def test_plan_of_mlp_training_step_reuses_memory():
    graph = fused_graph(value_and_grad(mlp_loss), *mlp_args())
    plan = plan_buffers(graph)
    assert_no_overlap(plan)
    assert plan.peak_live_bytes <= plan.arena_bytes < plan.unshared_bytes
    assert list(plan.totals) == [np.dtype(F32)]
    text = plan.describe()
    assert text.startswith(f"buffer plan: {len(plan.buffers)} buffers in ")
    assert len(text.splitlines()) == 2 + len(plan.buffers)


def test_plan_of_donated_outputs_under_a_guard_defers_them_to_the_end():
    def step(w, x):
        loss = np.sum(np.tanh(x @ w))
        return loss, w - 0.1 * (x.T @ np.ones((4, 3), F32))

    w, x = np.ones((5, 3), F32), np.ones((4, 5), F32)
    graph = fused_graph(step, w, x)
    unguarded = plan_buffers(graph, {1: 0})  # written straight into w: no buffer
    assert all(b.var is not graph.outputs[1] for b in unguarded.buffers)
    guarded = plan_buffers(graph, {1: 0}, guard=0)  # into a buffer, copied in if finite
    assert buffer_of(guarded, graph.outputs[1]).end == len(graph.nodes)
    assert_no_overlap(guarded)


@given(random_graphs())
def test_plan_of_random_fused_graphs_never_overlaps_live_buffers(graph):
    fused = lower(graph, "fused")
    plan = plan_buffers(fused)
    assert_no_overlap(plan)
    assert plan.peak_live_bytes <= plan.arena_bytes
    # every buffer lives from its allocation to the last read of its value or of any view
    ranges, views = live_ranges(fused)
    for b in plan.buffers:
        assert b.end == max(b.start, ranges[views.get(b.var, b.var)][1])
        readers = [t for t, n in enumerate(fused.nodes)
                   if any(views.get(v, v) is views.get(b.var, b.var) for v in n.inputs)]
        assert b.end >= max(readers, default=b.start)
