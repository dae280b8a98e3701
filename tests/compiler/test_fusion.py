"""Elementwise fusion, structurally: how many kernels a model lowers to, what fuses with what,
the case that must not fuse (convexity), and that every FUSED node keeps the contract codegen
relies on (see compiler/passes/fuse.py)."""

from __future__ import annotations

import numpy as np

from compiler import compile, value_and_grad
from compiler.codegen import plan_buffers
from compiler.passes.fuse import FUSIBLE_REDUCTIONS, fuse_elementwise
from compiler.pipeline import lower
from compiler.pytree import tree_flatten
from ir.graph import Graph, Node
from ir.interpreter import evaluate
from ir.ops import ELEMENTWISE, Op

F32 = np.float32


def check_fused_contract(graph: Graph) -> None:
    """Every FUSED node is as the brief's contract says; nothing fusible is left outside."""
    for node in graph.nodes:
        if node.op == Op.GEMM:
            check_gemm_contract(node)
            continue
        if node.op != Op.FUSED:
            assert node.op not in ELEMENTWISE | FUSIBLE_REDUCTIONS, f"unfused {node}"
            continue
        body, kind, shape = node.params["body"], node.params["kind"], node.params["shape"]
        assert set(node.params) == {"body", "kind", "shape"}
        assert [v.type for v in body.inputs] == [v.type for v in node.inputs]
        assert [v.type for v in body.outputs] == [v.type for v in node.outputs]
        producers = body.producers()
        reduced = set()
        for inner in body.nodes:
            assert not any(v in reduced for v in inner.inputs), "a reduction is read in its body"
            if inner.op in ELEMENTWISE:
                assert inner.out.shape == shape
            elif inner.op == Op.CONSTANT:
                assert inner.out.ndim == 0
            elif inner.op == Op.BROADCAST_TO:
                (source,) = inner.inputs
                assert source in body.inputs or producers[source].op == Op.CONSTANT
                assert inner.out.shape == shape
            else:
                assert inner.op in FUSIBLE_REDUCTIONS, f"{inner.op} in a body"
                assert inner.inputs[0].shape == shape
                reduced.add(inner.out)
        assert reduced <= set(body.outputs)
        assert kind == ("reduce" if reduced else "loop")


def check_gemm_contract(node: Node) -> None:
    """A GEMM node (compiler/passes/gemm_epilogue.py): inputs (a, b, x) or (a, b, x, t)
    with t 0-d, one output of the product's shape, finite nonzero alpha and beta, evaluating
    to alpha t (a @ b) + beta x (t = 1 when absent)."""
    params = node.params
    assert set(params) == {"alpha", "beta"}
    assert all(c != 0 and np.isfinite(c) for c in params.values())
    a, b, x, *scale = node.inputs
    assert len(scale) <= 1 and all(t.ndim == 0 and t.dtype == x.dtype for t in scale)
    (out,) = node.outputs
    assert out.type == x.type and out.shape == (a.shape[0], b.shape[1])
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(v.shape).astype(v.dtype) for v in node.inputs]
    (got,) = evaluate(Graph(list(node.inputs), [node], [out]), values)
    a, b, x, *scale = (v.astype(np.float64) for v in values)
    t = scale[0] if scale else 1.0
    tol = 1e-5 if out.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, params["alpha"] * t * (a @ b) + params["beta"] * x,
                               rtol=tol, atol=tol)


def fused_nodes(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if n.op == Op.FUSED]


def body_ops(node: Node) -> set[Op]:
    return {n.op for n in node.params["body"].nodes}


def kernel_of(graph: Graph, op: Op) -> Node:
    (found,) = [n for n in fused_nodes(graph) if op in body_ops(n)]
    return found


def fused(fn, *args) -> Graph:
    graph = compile(fn).trace(*args).graph
    result = lower(graph, "fused", check=True)
    check_fused_contract(result)
    leaves, _ = tree_flatten(args)
    for want, got in zip(evaluate(graph, leaves), evaluate(result, leaves)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    return result


def count(graph: Graph, op: Op) -> int:
    return sum(n.op == op for n in graph.nodes)


def test_fuse_chain_of_ten_elementwise_ops_is_one_loop():
    def chain(x, y):
        z = np.tanh(x) * y + 1.5
        z = np.exp(z) - y
        z = np.maximum(z, 0.25) / (y + 2.0)
        return np.sqrt(np.abs(z))

    graph = fused(chain, np.ones((3, 4), F32), np.full((3, 4), 0.5, F32))
    (kernel,) = graph.nodes
    assert kernel.op == Op.FUSED and kernel.params["kind"] == "loop"
    computations = [n for n in kernel.params["body"].nodes if n.op in ELEMENTWISE]
    assert len(computations) == 10


def test_fuse_path_through_matmul_must_not_fuse():
    # a -> b = tanh(a) -> c = b @ w -> d = exp(c) * b: b and d in one kernel would need c,
    # which is computed outside from b: the group would not be convex
    def f(a, w):
        b = np.tanh(a)
        return np.exp(b @ w) * b

    graph = fused(f, np.ones((3, 3), F32), np.ones((3, 3), F32))
    assert [n.op for n in graph.nodes] == [Op.FUSED, Op.MATMUL, Op.FUSED]
    assert kernel_of(graph, Op.TANH) is not kernel_of(graph, Op.EXP)


def test_fuse_reduction_with_its_elementwise_producers():
    def logsumexp(x):
        m = np.max(x, axis=1, keepdims=True)
        return np.log(np.sum(np.exp(x - m), axis=1)) + m[:, 0]

    graph = fused(logsumexp, np.random.default_rng(0).normal(size=(4, 7)).astype(F32))
    sum_kernel = kernel_of(graph, Op.REDUCE_SUM)
    assert {Op.SUB, Op.EXP, Op.BROADCAST_TO} <= body_ops(sum_kernel)
    assert sum_kernel.params["kind"] == "reduce" and sum_kernel.params["shape"] == (4, 7)
    # max, then sum(exp(x - m)), then log(s) + m over the rows
    assert len(fused_nodes(graph)) == 3


def test_fuse_softmax_is_three_kernels():
    def softmax(x):
        e = np.exp(x - np.max(x, axis=-1, keepdims=True))
        return e / np.sum(e, axis=-1, keepdims=True)

    graph = fused(softmax, np.random.default_rng(1).normal(size=(4, 7)).astype(F32))
    kinds = [n.params["kind"] for n in fused_nodes(graph)]
    assert kinds == ["reduce", "reduce", "loop"]
    assert Op.EXP in body_ops(kernel_of(graph, Op.REDUCE_SUM))


def test_fuse_matmul_epilogue_into_one_kernel_over_its_output():
    graph = fused(lambda x, w, b: np.maximum(x @ w + b, 0.0),
                  np.ones((4, 3), F32), np.ones((3, 5), F32), np.ones(5, F32))
    matmul, epilogue = graph.nodes
    assert matmul.op == Op.MATMUL and epilogue.op == Op.FUSED
    assert matmul.out in epilogue.inputs
    assert {Op.ADD, Op.MAX, Op.BROADCAST_TO, Op.CONSTANT} <= body_ops(epilogue)
    assert epilogue.params["shape"] == (4, 5)


def test_fuse_siblings_into_one_multi_output_loop():
    graph = fused(lambda x: (np.exp(x), np.tanh(x), np.sum(x * x, axis=0)), np.ones((3, 4), F32))
    (kernel,) = graph.nodes
    assert len(kernel.outputs) == 3 and kernel.params["kind"] == "reduce"


def test_fuse_absorbs_broadcasts_and_scalar_constants():
    graph = fused(lambda x, b: x * 2.0 + b, np.ones((3, 4), F32), np.ones(4, F32))
    (kernel,) = graph.nodes
    assert kernel.inputs == tuple(graph.inputs)


def test_fuse_exposes_values_read_outside_as_outputs():
    def f(x, w):
        h = np.tanh(x) * 2.0
        return (h @ w).sum() + h.sum()

    graph = fused(f, np.ones((3, 3), F32), np.ones((3, 3), F32))
    first = graph.nodes[0]
    assert first.op == Op.FUSED and len(first.outputs) == 2  # h for the matmul, and sum(h)


def relu_layer_with_handwritten_backward(x, w, b, g):
    z = x @ w + b
    h = np.maximum(z, 0.0)
    dz = np.where(z > 0, g, 0.0)
    return h, x.T @ dz, np.sum(dz, axis=0)


def test_fuse_handwritten_backward_with_its_forward_epilogue():
    # relu, its backward mask and db all read z and nothing between them: one loop over z
    rng = np.random.default_rng(2)
    args = [rng.normal(size=s).astype(F32) for s in [(4, 3), (3, 5), (5,), (4, 5)]]
    graph = fused(relu_layer_with_handwritten_backward, *args)
    (kernel,) = fused_nodes(graph)
    assert {Op.ADD, Op.MAX, Op.GT, Op.WHERE, Op.REDUCE_SUM} <= body_ops(kernel)
    assert count(graph, Op.MATMUL) == 2


def test_fuse_backward_mask_goes_to_the_kernel_that_uses_it():
    # the mask is read only after dh = g @ w2.T, so it is recomputed there from z rather than
    # written out by the forward kernel
    def f(x, w1, w2, g):
        z = x @ w1
        h = np.maximum(z, 0.0)
        dh = (h @ w2 - g) @ w2.T
        return np.sum(np.where(z > 0, dh, 0.0), axis=0)

    rng = np.random.default_rng(3)
    args = [rng.normal(size=s).astype(F32) for s in [(4, 3), (3, 5), (5, 2), (4, 2)]]
    graph = fused(f, *args)
    forward, backward = kernel_of(graph, Op.MAX), kernel_of(graph, Op.REDUCE_SUM)
    assert Op.GT not in body_ops(forward) and Op.GT in body_ops(backward)
    assert forward.inputs[0] in backward.inputs  # z itself, not a mask
    assert len(forward.outputs) == 1


def test_a_mask_both_counted_and_applied_is_recomputed_by_each_kernel_not_stored():
    # max-pool's gradient: mask = [x == max] is summed (the tie count) and multiplies g /
    # count, which needs the sum first, so the two are separate loops: each computes the mask
    # from x instead of one writing it out for the other (compiler/passes/move_work.py)
    from compiler import nn

    x = np.random.default_rng(4).normal(size=(2, 3, 4, 4)).astype(F32)
    x[0, 0, :2, :2] = 1.0  # a window of four tied maxima: the count matters
    w = np.random.default_rng(5).normal(size=(2, 3, 2, 2)).astype(F32)
    graph = fused(value_and_grad(lambda x: np.sum(nn.max_pool2d(x, 2) * w)), x)
    window_sized = [v for n in fused_nodes(graph) for v in n.outputs if v.ndim == 6]
    assert len(window_sized) == 1  # dx alone; no mask between two kernels
    (count_kernel,) = [n for n in fused_nodes(graph) if {Op.EQ, Op.REDUCE_SUM} <= body_ops(n)]
    assert [v.ndim for v in count_kernel.outputs] == [4]  # the count alone
    (dx_kernel,) = [n for n in fused_nodes(graph) if n.outputs[0] in window_sized]
    assert Op.EQ in body_ops(dx_kernel)


def mlp_loss(params, x, y):
    h = np.maximum(x @ params["w1"] + params["b1"], 0.0)
    logits = h @ params["w2"] + params["b2"]
    m = np.max(logits, axis=1, keepdims=True)
    logp = logits - m - np.log(np.sum(np.exp(logits - m), axis=1, keepdims=True))
    return -np.mean(np.sum(logp * y, axis=1))


def mlp_args():
    rng = np.random.default_rng(0)
    params = {
        "w1": rng.normal(size=(6, 5)).astype(F32), "b1": rng.normal(size=5).astype(F32),
        "w2": rng.normal(size=(5, 3)).astype(F32), "b2": rng.normal(size=3).astype(F32),
    }
    return params, rng.normal(size=(4, 6)).astype(F32), np.eye(3, dtype=F32)[[0, 2, 1, 2]]


def test_mlp_forward_kernel_count():
    graph = fused(mlp_loss, *mlp_args())
    # bias+relu; bias+row max; sum(exp(. - m)); log of the sums [4]; -sum(logp * y / 4)
    # over both axes (the batch sum and the mean's scaling joined the row sums' loop)
    assert count(graph, Op.MATMUL) == 2
    assert count(graph, Op.FUSED) == 5
    assert [n.params["shape"] for n in fused_nodes(graph)] == [(4, 5), (4, 3), (4, 3), (4,),
                                                               (4, 3)]


def test_mlp_training_step_kernel_count():
    graph = fused(value_and_grad(mlp_loss), *mlp_args())
    assert count(graph, Op.MATMUL) == 2 + 3  # x needs no gradient
    # forward: bias+relu; bias+row max; exp and row sum (with the max's tie mask); log [4];
    # loss with dlogits' first terms; backward: log's and exp's vjp; max's vjp + db2; relu's
    # vjp + db1. No kernel over [4,1] or [], none computing only a constant.
    assert count(graph, Op.FUSED) == 8
    assert all(n.params["shape"] in ((4, 5), (4, 3), (4,)) for n in fused_nodes(graph))
    assert len(graph.nodes) < 25


def test_fused_dump_shows_each_kernel_with_its_body():
    text = compile(mlp_loss).ir(*mlp_args(), stage="fused")
    lines = text.splitlines()
    kernel_lines = [i for i, line in enumerate(lines) if "= fused[kind=" in line]
    assert kernel_lines
    for i in kernel_lines:
        assert lines[i + 1].lstrip().startswith("{ lambda")
        assert len(lines[i + 1]) - len(lines[i + 1].lstrip()) > len(lines[i]) - len(
            lines[i].lstrip())


def test_summary_has_one_line_per_kernel():
    f = compile(mlp_loss)
    args = mlp_args()
    graph = f.lowered(f.trace(*args), "fused")
    text = f.summary(*args)
    table, plan = text.split("\nbuffer plan: ")
    lines = table.splitlines()
    shown = [n for n in graph.nodes if n.op != Op.CONSTANT]
    assert len(lines) == len(shown) + 2  # header and total
    assert lines[1].split()[1] == "matmul"
    assert sum(" loop " in line or " reduce " in line for line in lines) == count(graph, Op.FUSED)
    assert lines[-1].startswith(f"{len(shown)} kernels")
    # the buffer plan: totals, arenas, then one line per buffer with its slot and live range
    plan_lines = plan.splitlines()
    assert plan_lines[1].startswith("arenas: float32")
    buffers = plan_lines[2:]
    buffers = buffers[:next((i for i, x in enumerate(buffers) if not x.startswith("  ")),
                            len(buffers))]
    assert len(buffers) == len(plan_buffers(graph).buffers) > 0
    assert all("float32[" in line and " kernels " in line for line in buffers)


def test_fuse_elementwise_alone_keeps_meaning_without_optimize():
    graph = compile(value_and_grad(mlp_loss)).trace(*mlp_args()).graph
    result = fuse_elementwise(graph)
    check_fused_contract(result)
    leaves, _ = tree_flatten(mlp_args())
    for want, got in zip(evaluate(graph, leaves), evaluate(result, leaves)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_cross_entropy_training_step_kernel_count():
    # the model of the benchmarks' small MLP step, with integer labels
    from compiler import nn

    def loss(params, x, y):
        h = np.maximum(x @ params["w1"] + params["b1"], 0.0)
        return nn.cross_entropy(h @ params["w2"] + params["b2"], y)

    params, x, _ = mlp_args()
    graph = fused(value_and_grad(loss), params, x, np.array([0, 2, 1, 2]))
    # bias+relu; bias+row max; exp + row sum; log [4]; loss and one-hot with dlogits' first
    # term; dlogits + db2; relu's vjp + db1 (was 11 before the reshape/scalar rewrites)
    assert count(graph, Op.FUSED) == 7
    assert count(graph, Op.MATMUL) == 5
    shapes = [n.params["shape"] for n in fused_nodes(graph)]
    assert shapes.count((4,)) == 1 and () not in shapes and (4, 1) not in shapes


def test_fuse_elementwise_chain_value_and_grad_is_one_kernel():
    # the chain benchmark: forward with its sum and the backward (elementwise in x, the seed
    # being a constant) are siblings over x's shape: one reduce kernel
    def f(x):
        sigmoid = 1.0 / (1.0 + np.exp(-x))
        return np.sum(np.tanh(0.7 * x + 0.1) * sigmoid - 0.5 * np.exp(-x * x))

    graph = fused(value_and_grad(f), np.linspace(-2, 2, 64).astype(F32))
    (kernel,) = graph.nodes
    assert kernel.op == Op.FUSED and kernel.params["kind"] == "reduce"
    assert kernel.inputs == tuple(graph.inputs) and len(kernel.outputs) == 2
