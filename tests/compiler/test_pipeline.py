"""The pipeline's contracts (compiler/pipeline.py): passes decide by a node's `role`, never by
its `note` (a comment for humans); roles survive every pass; the order constraints between
passes are checked in code; every pass is `Graph -> Graph`."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from compiler import compile, grad, nn, tree_map, value_and_grad
from compiler import pipeline as P
from compiler.passes.fuse import fuse_elementwise
from compiler.passes.gemm_epilogue import fuse_gemm_epilogues
from compiler.passes.move_work import move_work_for_fusion
from compiler.passes.remat import rematerialize_cheap_values
from compiler.passes.simplify import simplify_algebra
from ir.graph import Graph, Node, Role
from ir.ops import KernelKind, Op
from ir.printer import format_graph

ROOT = Path(__file__).resolve().parents[2]
F32 = np.float32


def deep_mlp_loss(params, x, y):
    h = x
    for i in range(3):
        h = np.maximum(h @ params[f"w{i}"] + params[f"b{i}"], 0.0)
    return nn.cross_entropy(h @ params["wo"] + params["bo"], y)


def sgd_step(params, x, y):
    grads = grad(deep_mlp_loss)(params, x, y)
    return tree_map(lambda w, g: w - 0.05 * g, params, grads)


def args():
    rng = np.random.default_rng(0)
    normal = lambda *shape: rng.normal(0, 0.3, shape).astype(F32)  # noqa: E731
    params = {"w0": normal(16, 32), "b0": normal(32), "w1": normal(32, 32), "b1": normal(32),
              "w2": normal(32, 32), "b2": normal(32), "wo": normal(32, 5), "bo": normal(5)}
    return params, normal(8, 16), rng.integers(0, 5, 8)


def traced(fn) -> Graph:
    return compile(fn).trace(*args()).graph


def all_nodes(graph: Graph):
    for node in graph.nodes:
        yield node
        body = node.params.get("body")
        if isinstance(body, Graph):
            yield from all_nodes(body)


def with_notes(graph: Graph, note_of) -> Graph:
    """`graph` with every node's note replaced by `note_of(node)` (bodies too)."""
    nodes = []
    for node in graph.nodes:
        params = node.params
        if isinstance(params.get("body"), Graph):
            params = {**params, "body": with_notes(params["body"], note_of)}
        nodes.append(dataclasses.replace(node, params=params, note=note_of(node)))
    return Graph(list(graph.inputs), nodes, list(graph.outputs))


def misleading_note(node: Node) -> str:
    """A note saying the opposite of the node's role, in the words autodiff and remat use."""
    return "" if node.role is not Role.FORWARD else "vjp recomputed: vjp matmul of %1"


@pytest.mark.parametrize("fn", [value_and_grad(deep_mlp_loss), sgd_step],
                         ids=["value_and_grad", "sgd_step"])
def test_no_pass_decides_by_a_note(fn):
    graph = traced(fn)
    assert any(n.role is Role.BACKWARD for n in graph.nodes)
    lied_to = with_notes(graph, misleading_note)
    blank = lambda g: format_graph(with_notes(g, lambda n: ""))  # noqa: E731
    for stage in ("optimized", "fused"):
        assert blank(P.lower(lied_to, stage)) == blank(P.lower(graph, stage)), stage


def test_the_passes_read_no_note():
    """A pass may hand a note on to the node it builds (`Node(..., node.note, ...)`), and
    nothing else: no comparison, no startswith."""
    files = [*sorted((ROOT / "compiler" / "passes").glob("*.py")),
             ROOT / "compiler" / "pipeline.py", ROOT / "compiler" / "cost_model.py"]
    found = []
    for path in files:
        tree = ast.parse(path.read_text())
        handed_on = set()
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Node":
                for arg in [*call.args, *(k.value for k in call.keywords)]:
                    handed_on.update(id(n) for n in ast.walk(arg))
        found += [f"{path.name}:{n.lineno}" for n in ast.walk(tree)
                  if isinstance(n, ast.Attribute) and n.attr == "note" and id(n) not in handed_on]
    assert not found, found


def test_roles_survive_every_pass():
    graph = traced(sgd_step)
    backward = sum(n.role is Role.BACKWARD for n in graph.nodes)
    assert backward > len(graph.nodes) // 3
    optimized = P.lower(graph, "optimized")
    assert any(n.role is Role.BACKWARD for n in optimized.nodes)
    fused = P.lower(graph, "fused")
    assert {n.role for n in all_nodes(fused)} == {Role.FORWARD, Role.BACKWARD}
    kinds = {n.params["kind"] for n in fused.nodes if n.op is Op.FUSED}
    assert kinds == {KernelKind.LOOP, KernelKind.REDUCE}
    assert all(isinstance(k, KernelKind) for k in kinds)
    assert any(n.op is Op.GEMM for n in fused.nodes)  # the SGD updates
    # a GEMM node keeps the role of the add or subtract it replaced
    roles = {n.out: n.role for n in optimized.nodes}
    gemms = [n for n in fuse_gemm_epilogues(optimized).nodes if n.op is Op.GEMM]
    assert gemms and all(n.role is roles[n.out] for n in gemms)


def test_recomputed_copies_keep_their_role_into_kernel_bodies():
    fused = P.lower(traced(value_and_grad(deep_mlp_loss)), "fused")
    assert Role.RECOMPUTED in {n.role for n in all_nodes(fused)}  # remat fired
    assert all(n.role is not Role.RECOMPUTED for n in fused.nodes if n.op is not Op.FUSED)


def test_forward_only_graphs_have_forward_roles_only():
    fused = P.lower(traced(deep_mlp_loss), "fused")
    assert {n.role for n in all_nodes(fused)} == {Role.FORWARD}


def test_the_pipeline_keeps_its_order_constraints():
    P.check_order()  # the real pipeline
    with pytest.raises(P.PipelineOrderError, match="fuse_gemm_epilogues must run before "
                       "fuse_elementwise"):
        P.check_order({"fused": (fuse_elementwise, fuse_gemm_epilogues)})
    # constraints reach into sub-pipelines: prepare_for_fusion holds move_work_for_fusion
    with pytest.raises(P.PipelineOrderError, match="before move_work_for_fusion"):
        P.check_order({"fused": (P.prepare_for_fusion, fuse_gemm_epilogues)})
    with pytest.raises(P.PipelineOrderError, match="simplify_algebra must run before"):
        P.check_order({"a": (P.prepare_for_fusion,), "b": (P.optimize,)})
    with pytest.raises(P.PipelineOrderError, match="rematerialize_cheap_values must run"):
        P.check_order({"fused": (fuse_elementwise, P.rematerialize)})


def test_every_stage_is_graph_to_graph_passes():
    names = {run.__name__ for passes in P.STAGES.values() for run in passes}
    assert names == {"optimize", "fuse_gemm_epilogues", "prepare_for_fusion",
                     "rematerialize_cheap_values", "fuse_elementwise"}
    assert P.rematerialize.passes == (rematerialize_cheap_values,)
    assert P.prepare_for_fusion.passes[0] is move_work_for_fusion
    assert simplify_algebra in P.optimize.passes
    graph = traced(deep_mlp_loss)
    for passes in P.STAGES.values():
        for run in passes:
            out = run(graph)
            assert isinstance(out, Graph)
            graph = out


def _module_state() -> dict[str, int]:
    """The size of every module-level dict, list, set and weak mapping in ir/, compiler/ and
    runtime/ (and so of any registry a trace could fill)."""
    import sys
    import weakref

    sizes = {}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in ("ir", "compiler", "runtime"):
            continue
        for attr, value in vars(module).items():
            if isinstance(value, (dict, list, set, weakref.WeakKeyDictionary,
                                  weakref.WeakValueDictionary, weakref.WeakSet)):
                sizes[f"{name}.{attr}"] = len(value)
    return sizes


def test_tracing_fills_no_module_level_registry():
    from compiler import custom_vjp

    @custom_vjp
    def clip_grad(x):
        return x

    clip_grad.defvjp(lambda x: (x, None), lambda _, g: (np.clip(g, -1.0, 1.0),))

    def loss(params, x, y):
        return deep_mlp_loss(params, clip_grad(x), y)

    compile(value_and_grad(loss)).trace(*args())  # first: lazy imports and caches settle
    before = _module_state()
    traced_again = compile(value_and_grad(loss)).trace(*args())
    assert traced_again.labels  # cross_entropy's label bounds: on the trace's record
    after = _module_state()
    grown = {k: (before.get(k), n) for k, n in after.items() if before.get(k) != n}
    assert not grown, grown
