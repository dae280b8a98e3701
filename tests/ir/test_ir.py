"""The IR records, shape rules, interpreter, verifier and tables."""

import numpy as np
import pytest

from ir import ops
from ir.graph import Graph, Node, Source, Var
from ir.interpreter import EVAL_RULES, evaluate
from ir.ops import Op
from ir.shapes import SHAPE_RULES, ShapeError, infer
from ir.types import TensorType
from ir.verifier import VerifyError, verify

F32 = np.dtype(np.float32)


def t(*shape, dtype=F32):
    return TensorType(shape, dtype)


def test_every_op_is_in_exactly_one_group():
    grouped = [op for group in ops.GROUPS.values() for op in group]
    assert sorted(grouped, key=lambda o: o.value) == sorted(Op, key=lambda o: o.value)
    assert len(grouped) == len(set(grouped))


@pytest.mark.parametrize("table", [SHAPE_RULES, EVAL_RULES], ids=["shape", "eval"])
def test_every_op_has_a_rule(table):
    assert set(table) == set(Op)


def test_type_prints_short():
    assert str(t(128, 784)) == "f32[128,784]"
    assert str(t(dtype=np.int64)) == "i64[]"
    with pytest.raises(TypeError, match="unsupported dtype"):
        TensorType((2,), np.float16)


@pytest.mark.parametrize(
    "op, types, params, expected",
    [
        (Op.MATMUL, [t(2, 3, 4), t(2, 4, 5)], {}, t(2, 3, 5)),
        (Op.BROADCAST_TO, [t(3, 1)], {"shape": (2, 3, 4)}, t(2, 3, 4)),
        (Op.REDUCE_SUM, [t(2, 3, 4)], {"axes": (0, 2)}, t(3)),
        (Op.SLICE, [t(5, 4)], {"starts": (1, 0), "stops": (5, 4), "steps": (2, 3)}, t(2, 2)),
        (Op.PAD, [t(2, 2)], {"lows": (1, 0), "highs": (0, 1), "interiors": (1, 0)}, t(4, 3)),
        (Op.GATHER, [t(5, 3), t(2, 4, dtype=np.int64)], {"axis": 0}, t(2, 4, 3)),
        (Op.SCATTER_ADD, [t(2, 4, 3), t(2, 4, dtype=np.int64)], {"axis": 0, "size": 5}, t(5, 3)),
        (Op.CONCATENATE, [t(2, 3), t(2, 5)], {"axis": 1}, t(2, 8)),
        (Op.LT, [t(3), t(3)], {}, t(3, dtype=np.bool_)),
    ],
)
def test_shape_rules(op, types, params, expected):
    assert infer(op, types, params) == (expected,)


@pytest.mark.parametrize(
    "op, types, params, message",
    [
        (Op.MATMUL, [t(2, 3), t(4, 5)], {}, "inner dimensions differ"),
        (Op.ADD, [t(2, 3), t(3)], {}, "one shape"),
        (Op.ADD, [t(3), t(3, dtype=np.float64)], {}, "share a dtype"),
        (Op.BROADCAST_TO, [t(3)], {"shape": (4,)}, "cannot broadcast"),
        (Op.RESHAPE, [t(3)], {"shape": (4,)}, "cannot reshape"),
        (Op.EXP, [t(3, dtype=np.int64)], {}, "floating-point"),
        (Op.REDUCE_SUM, [t(3)], {"axes": (1,)}, "out of range"),
    ],
)
def test_shape_rules_reject_bad_operands(op, types, params, message):
    with pytest.raises(ShapeError, match=message):
        infer(op, types, params)


def test_interpreter_pad_is_adjoint_of_slice():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 4)), rng.normal(size=(2, 2))
    slice_params = {"starts": (1, 0), "stops": (5, 4), "steps": (2, 3)}
    pad_params = {"lows": (1, 0), "highs": (1, 0), "interiors": (1, 2)}
    sliced = EVAL_RULES[Op.SLICE](x, **slice_params)
    padded = EVAL_RULES[Op.PAD](y, **pad_params)
    assert padded.shape == x.shape
    np.testing.assert_allclose(np.sum(sliced * y), np.sum(x * padded))  # <Sx, y> = <x, Pᵀy>


def test_interpreter_scatter_add_is_adjoint_of_gather():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 5, 2))
    idx = np.array([[0, 4], [4, 4], [1, 0]])
    g = rng.normal(size=(3, 3, 2, 2))
    gathered = EVAL_RULES[Op.GATHER](x, idx, axis=1)
    scattered = EVAL_RULES[Op.SCATTER_ADD](g, idx, axis=1, size=5)
    np.testing.assert_allclose(np.sum(gathered * g), np.sum(x * scattered))


def test_random_uniform_is_deterministic_and_uniform():
    key = np.array(7)
    a = EVAL_RULES[Op.RANDOM_UNIFORM](key, shape=(1000,), dtype=F32)
    b = EVAL_RULES[Op.RANDOM_UNIFORM](key, shape=(1000,), dtype=F32)
    c = EVAL_RULES[Op.RANDOM_UNIFORM](np.array(8), shape=(1000,), dtype=F32)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert 0.0 <= a.min() and a.max() < 1.0 and abs(a.mean() - 0.5) < 0.05


def _graph():
    a, b = Var(t(4, 3)), Var(t(3, 2))
    c = Var(t(4, 2))
    d = Var(t(4, 2))
    nodes = [
        Node(Op.MATMUL, (a, b), (c,), {}, Source("/src/model.py", 12)),
        Node(Op.TANH, (c,), (d,), {}, Source("/src/model.py", 13)),
    ]
    return Graph([a, b], nodes, [d])


def test_verifier_accepts_well_formed_graph():
    graph = _graph()
    assert verify(graph) is graph


def test_verifier_reports_wrong_type_with_neighbours():
    graph = _graph()
    bad = Var(t(4, 5))
    graph.nodes[1] = Node(Op.TANH, graph.nodes[1].inputs, (bad,), {}, graph.nodes[1].source)
    graph.outputs = [bad]
    with pytest.raises(VerifyError) as info:
        verify(graph)
    message = str(info.value)
    assert "node 1" in message and "tanh should give" in message
    assert "matmul a b" in message  # the producer of its input is shown
    assert "model.py:13" in message


def test_verifier_reports_use_before_definition():
    graph = _graph()
    graph.nodes.reverse()
    with pytest.raises(VerifyError, match="used before it is defined"):
        verify(graph)


def test_verifier_reports_undefined_output():
    graph = _graph()
    graph.outputs = [Var(t(1))]
    with pytest.raises(VerifyError, match="never defined"):
        verify(graph)


def test_verifier_reports_a_role_that_is_not_a_role():
    # a pass that builds Node(..., source, "vjp", node.note) has its arguments shifted
    graph = _graph()
    node = graph.nodes[1]
    graph.nodes[1] = Node(node.op, node.inputs, node.outputs, {}, node.source, "why", "vjp")
    with pytest.raises(VerifyError, match="role 'vjp' and note 'why'"):
        verify(graph)


def test_evaluate_runs_graph():
    graph = _graph()
    x, w = np.ones((4, 3), np.float32), np.full((3, 2), 0.1, np.float32)
    (out,) = evaluate(graph, [x, w])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.tanh(x @ w), rtol=1e-6)
