"""Numba codegen vs the reference interpreter.

One op table drives the primitive test: every primitive (with sample params and shapes) is
one node of a single graph per dtype, so the whole table costs one Numba compile per dtype.
Arguments are passed as non-contiguous views (transposed / sliced) to exercise the checks.
"""

import numpy as np
import pytest

from compiler.backend import build_numba
from compiler.codegen import generate
from ir.graph import Graph, Node, Var
from ir.interpreter import evaluate
from ir.ops import Op
from ir.printer import format_graph
from ir.shapes import infer
from ir.types import TensorType

RNG = np.random.default_rng(0)


class Builder:
    def __init__(self):
        self.inputs, self.values, self.nodes, self.outputs, self.labels = [], [], [], [], []

    def input(self, shape, dtype, kind="float"):
        var = Var(TensorType(shape, dtype))
        if kind == "positive":
            value = RNG.uniform(0.2, 2.0, shape)
        elif kind == "index":
            value = RNG.integers(-3, 3, shape)
        elif kind == "bool":
            value = RNG.random(shape) > 0.5
        elif kind == "int":
            value = RNG.integers(-50, 50, shape)
        elif kind in ("wellcond", "spd"):  # square matrices in the last two axes
            a = RNG.uniform(-0.3, 0.3, shape)
            value = a @ np.swapaxes(a, -1, -2) if kind == "spd" else a
            value = value + np.eye(shape[-1])
        else:
            value = RNG.uniform(-2.0, 2.0, shape)
        self.inputs.append(var)
        self.values.append(np.asarray(value).astype(dtype))
        return var

    def emit(self, op, inputs, **params):
        outs = tuple(Var(t) for t in infer(op, [v.type for v in inputs], params))
        self.nodes.append(Node(op, tuple(inputs), outs, params))
        return outs[0]

    def output(self, label, var):
        self.outputs.append(var)
        self.labels.append(label)

    def graph(self):
        return Graph(self.inputs, self.nodes, self.outputs)


FLOAT_UNARY = {  # op -> input kind
    Op.NEG: "float", Op.EXP: "float", Op.LOG: "positive", Op.LOG1P: "positive",
    Op.EXPM1: "float", Op.SQRT: "positive", Op.TANH: "float", Op.LOGISTIC: "float",
    Op.SIN: "float", Op.COS: "float", Op.ABS: "float", Op.SIGN: "float",
    Op.STOP_GRADIENT: "float",
}
BINARY = [Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MAX, Op.MIN, Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ,
          Op.NE]

def _unary(op, kind):
    return lambda b, dt: b.emit(op, [b.input((3, 4), dt, kind)])


def _binary(op):
    return lambda b, dt: b.emit(op, [b.input((3, 4), dt), b.input((3, 4), dt)])


# label -> builder(b, dtype) returning the output var; one entry per primitive and variant.
OP_TABLE = {
    **{op.value: _unary(op, kind) for op, kind in FLOAT_UNARY.items()},
    **{op.value: _binary(op) for op in BINARY},
    "pow": lambda b, dt: b.emit(Op.POW, [b.input((3, 4), dt, "positive"), b.input((3, 4), dt)]),
    "where": lambda b, dt: b.emit(Op.WHERE, [b.input((3, 4), np.bool_, "bool"),
                                             b.input((3, 4), dt), b.input((3, 4), dt)]),
    "cast_i32": lambda b, dt: b.emit(Op.CAST, [b.input((3, 4), dt)], dtype=np.dtype("int32")),
    "cast_bool": lambda b, dt: b.emit(Op.CAST, [b.input((3, 4), dt)], dtype=np.dtype("bool")),
    "cast_float": lambda b, dt: b.emit(Op.CAST, [b.input((3, 4), dt)],
                                       dtype=np.dtype("float64" if dt == "float32" else "float32")),
    "cast_from_bool": lambda b, dt: b.emit(Op.CAST, [b.input((3,), np.bool_, "bool")],
                                           dtype=np.dtype(dt)),
    "add_i32": lambda b, dt: b.emit(Op.ADD, [b.input((5,), np.int32, "int"),
                                             b.input((5,), np.int32, "int")]),
    "max_i64": lambda b, dt: b.emit(Op.MAX, [b.input((5,), np.int64, "int"),
                                             b.input((5,), np.int64, "int")]),
    "neg_i32": lambda b, dt: b.emit(Op.NEG, [b.input((5,), np.int32, "int")]),
    "scalar_mul": lambda b, dt: b.emit(Op.MUL, [b.input((), dt), b.input((), dt)]),
    "broadcast_to": lambda b, dt: b.emit(Op.BROADCAST_TO, [b.input((4,), dt)], shape=(3, 4)),
    "broadcast_add": lambda b, dt: b.emit(Op.ADD, [
        b.emit(Op.BROADCAST_TO, [b.input((3, 1), dt)], shape=(2, 3, 4)), b.input((2, 3, 4), dt)]),
    "broadcast_scalar": lambda b, dt: b.emit(Op.BROADCAST_TO, [b.input((), dt)], shape=(2, 3)),
    "reshape": lambda b, dt: b.emit(Op.RESHAPE, [b.input((3, 4), dt)], shape=(4, 3)),
    "reshape_flat": lambda b, dt: b.emit(Op.RESHAPE, [b.input((3, 4), dt)], shape=(12,)),
    "reshape_view": lambda b, dt: b.emit(Op.RESHAPE, [b.emit(
        Op.TRANSPOSE, [b.input((3, 4), dt)], perm=(1, 0))], shape=(2, 6)),
    "reshape_0d": lambda b, dt: b.emit(Op.RESHAPE, [b.input((1, 1), dt)], shape=()),
    "transpose": lambda b, dt: b.emit(Op.TRANSPOSE, [b.input((3, 4), dt)], perm=(1, 0)),
    "transpose_3d": lambda b, dt: b.emit(Op.TRANSPOSE, [b.input((2, 3, 4), dt)], perm=(2, 0, 1)),
    "slice": lambda b, dt: b.emit(Op.SLICE, [b.input((5, 6), dt)], starts=(1, 0), stops=(5, 6),
                                  steps=(2, 3)),
    "slice_exp": lambda b, dt: b.emit(Op.EXP, [b.emit(
        Op.SLICE, [b.input((5, 6), dt)], starts=(1, 2), stops=(4, 6), steps=(1, 1))]),
    "pad": lambda b, dt: b.emit(Op.PAD, [b.input((2, 3), dt)], lows=(1, 0), highs=(0, 2),
                                interiors=(1, 0)),
    "concatenate": lambda b, dt: b.emit(Op.CONCATENATE, [b.input((2, 3), dt),
                                                         b.input((2, 2), dt)], axis=1),
    "reduce_sum_inner": lambda b, dt: b.emit(Op.REDUCE_SUM, [b.input((3, 4), dt)], axes=(1,)),
    "reduce_sum_outer": lambda b, dt: b.emit(Op.REDUCE_SUM, [b.input((3, 4), dt)], axes=(0,)),
    "reduce_sum_all": lambda b, dt: b.emit(Op.REDUCE_SUM, [b.input((3, 4), dt)], axes=(0, 1)),
    "reduce_sum_i32": lambda b, dt: b.emit(Op.REDUCE_SUM, [b.input((3, 4), np.int32, "int")],
                                           axes=(1,)),
    "reduce_max": lambda b, dt: b.emit(Op.REDUCE_MAX, [b.input((3, 4), dt)], axes=(0,)),
    "reduce_max_inner": lambda b, dt: b.emit(Op.REDUCE_MAX, [b.input((2, 3, 4), dt)],
                                             axes=(1, 2)),
    "reduce_prod": lambda b, dt: b.emit(Op.REDUCE_PROD, [b.input((3, 4), dt)], axes=(1,)),
    "gather": lambda b, dt: b.emit(Op.GATHER, [b.input((5, 3), dt),
                                               b.input((4,), np.int64, "index")], axis=0),
    "gather_2d_idx": lambda b, dt: b.emit(Op.GATHER, [b.input((2, 5), dt),
                                                      b.input((2, 2), np.int32, "index")], axis=1),
    "scatter_add": lambda b, dt: b.emit(Op.SCATTER_ADD, [b.input((6, 3), dt),
                                                         b.input((6,), np.int64, "index")],
                                        axis=0, size=4),
    "matmul": lambda b, dt: b.emit(Op.MATMUL, [b.input((3, 4), dt), b.input((4, 2), dt)]),
    "matmul_transposed": lambda b, dt: b.emit(Op.MATMUL, [
        b.emit(Op.TRANSPOSE, [b.input((4, 3), dt)], perm=(1, 0)), b.input((4, 2), dt)]),
    "matmul_batched": lambda b, dt: b.emit(Op.MATMUL, [b.input((2, 3, 4), dt),
                                                       b.input((2, 4, 5), dt)]),
    # made after autodiff by the gemm pass; here x is not donated, so C starts as its copy
    "gemm": lambda b, dt: b.emit(Op.GEMM, [b.input((3, 4), dt), b.input((4, 2), dt),
                                           b.input((3, 2), dt)], alpha=-0.5, beta=0.9),
    "gemm_scaled": lambda b, dt: b.emit(Op.GEMM, [
        b.emit(Op.TRANSPOSE, [b.input((4, 3), dt)], perm=(1, 0)), b.input((4, 2), dt),
        b.input((3, 2), dt), b.input((), dt)], alpha=2.0, beta=1.0),
    "conv2d": lambda b, dt: b.emit(Op.CONV2D, [b.input((2, 2, 5, 6), dt),
                                               b.input((3, 2, 2, 3), dt)],
                                   strides=(2, 1), padding=((1, 0), (1, -1)), dilation=(1, 2)),
    "random_uniform": lambda b, dt: b.emit(Op.RANDOM_UNIFORM, [b.input((), np.int64, "int")],
                                           shape=(3, 5), dtype=np.dtype(dt)),
    "atan2": lambda b, dt: b.emit(Op.ATAN2, [b.input((3, 4), dt), b.input((3, 4), dt)]),
    "fmod": lambda b, dt: b.emit(Op.FMOD, [b.input((3, 4), dt), b.input((3, 4), dt, "positive")]),
    "fmod_i64": lambda b, dt: b.emit(Op.FMOD, [b.input((6,), np.int64, "int"),
                                               b.input((6,), np.int64, "index")]),
    "argsort": lambda b, dt: b.emit(Op.ARGSORT, [b.input((2, 3, 5), dt)]),
    "solve": lambda b, dt: b.emit(Op.SOLVE, [b.input((2, 3, 3), dt, "wellcond"),
                                             b.input((2, 3, 2), dt)]),
    "slogdet": lambda b, dt: b.emit(Op.SLOGDET, [b.input((2, 3, 3), dt)]),
    "cholesky": lambda b, dt: b.emit(Op.CHOLESKY, [b.input((3, 3), dt, "spd")]),
    "all_reduce": lambda b, dt: b.emit(Op.ALL_REDUCE, [b.input((3, 4), dt)],
                                       reduction="mean",
                                       shapes=((2, 3), (6,))),  # one process: its first part
    "all_reduce_i64": lambda b, dt: b.emit(Op.ALL_REDUCE, [b.input((5,), np.int64, "int")],
                                           reduction="max", shapes=((5,),)),
    "constant_array": lambda b, dt: b.emit(Op.ADD, [
        b.emit(Op.CONSTANT, [], value=np.arange(6, dtype=dt).reshape(2, 3)), b.input((2, 3), dt)]),
    "constant_scalar": lambda b, dt: b.emit(Op.MUL, [b.emit(Op.BROADCAST_TO, [
        b.emit(Op.CONSTANT, [], value=np.array(0.25, dt))], shape=(3,)), b.input((3,), dt)]),
    "scan": lambda b, dt: _scan(b, dt, reverse=False),
    "scan_reverse": lambda b, dt: _scan(b, dt, reverse=True),
    "while": lambda b, dt: _while(b, dt),
}


def _body(inputs, build):
    """A loop body: `build(emit, *inputs)` returns its outputs."""
    nodes = []

    def emit(op, args, **params):
        outs = tuple(Var(t) for t in infer(op, [v.type for v in args], params))
        nodes.append(Node(op, tuple(args), outs, params))
        return outs[0]

    return Graph(list(inputs), nodes, list(build(emit, *inputs)))


def _scan(b, dt, reverse):
    """h = h * c + x over 4 steps of x (3,); the ys (h * c) summed into the result."""
    v = lambda: Var(TensorType((3,), dt))  # noqa: E731
    body = _body([v(), v(), v()], lambda emit, c, h, x: (
        emit(Op.ADD, [emit(Op.MUL, [h, c]), x]), emit(Op.MUL, [h, c])))
    c, h0, xs = b.input((3,), dt), b.input((3,), dt), b.input((4, 3), dt)
    params = {"body": body, "num_consts": 1, "num_carry": 1, "length": 4, "reverse": reverse}
    outs = tuple(Var(t) for t in infer(Op.SCAN, [c.type, h0.type, xs.type], params))
    b.nodes.append(Node(Op.SCAN, (c, h0, xs), outs, params))
    return b.emit(Op.ADD, [outs[0], b.emit(Op.REDUCE_SUM, [outs[1]], axes=(0,))])


def _while(b, dt):
    """(h, k) = (h + h, k + 1) while k < 3, from k = 0: h * 8."""
    h, k = Var(TensorType((3,), dt)), Var(TensorType((), np.int64))
    limit = Var(TensorType((), np.int64))
    cond = _body([limit, h, k], lambda emit, lim, h, k: (emit(Op.LT, [k, lim]),))
    body = _body([Var(h.type), Var(k.type)], lambda emit, h, k: (
        emit(Op.ADD, [h, h]), emit(Op.ADD, [k, emit(Op.CONSTANT, [], value=np.int64(1))])))
    args = (b.emit(Op.CONSTANT, [], value=np.int64(3)), b.input((3,), dt),
            b.emit(Op.CONSTANT, [], value=np.int64(0)))
    params = {"cond": cond, "body": body, "num_cond_consts": 1}
    outs = tuple(Var(t) for t in infer(Op.WHILE, [a.type for a in args], params))
    b.nodes.append(Node(Op.WHILE, args, outs, params))
    return outs[0]


def non_contiguous(value):
    """The same values as a transposed or sliced view (not C-contiguous)."""
    if value.ndim < 2:
        wide = np.zeros((value.size * 2,) if value.ndim else (), value.dtype)
        if value.ndim == 0:
            return value
        wide[::2] = value
        return wide[::2]
    return np.asfortranarray(value)


# float64 variants checked inside the float32 graph (the full float64 table is a slow test).
FLOAT64_EXTRAS = ["exp", "tanh", "logistic", "matmul", "gemm", "reduce_sum_inner",
                  "random_uniform"]


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_every_op_numba_matches_interpreter(dtype):
    b = Builder()
    for label, build in OP_TABLE.items():
        b.output(label, build(b, dtype))
    if dtype == "float32":
        for label in FLOAT64_EXTRAS:
            b.output(f"{label} (float64)", OP_TABLE[label](b, "float64"))
    graph = b.graph()
    covered = {node.op for node in graph.nodes}
    assert covered >= (set(Op) - {Op.FUSED}), set(Op) - covered
    executable = build_numba(graph)
    args = [non_contiguous(v) for v in b.values]
    assert any(not a.flags.c_contiguous for a in args if a.ndim)
    want = evaluate(graph, b.values)
    got = executable(args)
    for label, w, g in zip(b.labels, want, got):
        g = np.asarray(g)
        assert g.shape == w.shape and g.dtype == w.dtype, (label, g.dtype, g.shape)
        tol = 2e-6 if w.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(g, w, rtol=tol * 4, atol=tol, err_msg=label)


def _fused_graph():
    """Two FUSED nodes: (x + bias) -> tanh -> *2 with a row sum (scalar accumulators), and a
    second with a column max and a total sum (accumulator array)."""
    s = (3, 4)
    f32 = np.dtype("float32")
    b = Builder()
    x, bias = b.input(s, f32), b.input((4,), f32)
    ba, bb = Var(TensorType(s, f32)), Var(TensorType((4,), f32))
    body = Builder()
    body.nodes = []
    bias_b = body.emit(Op.BROADCAST_TO, [bb], shape=s)
    h = body.emit(Op.TANH, [body.emit(Op.ADD, [ba, bias_b])])
    two = body.emit(Op.BROADCAST_TO, [body.emit(Op.CONSTANT, [], value=np.array(2.0, f32))],
                    shape=s)
    y = body.emit(Op.MUL, [h, two])
    row = body.emit(Op.REDUCE_SUM, [y], axes=(1,))
    body_graph = Graph([ba, bb], body.nodes, [y, row])
    outs = (Var(TensorType(s, f32)), Var(TensorType((3,), f32)))
    b.nodes.append(Node(Op.FUSED, (x, bias), outs, {"body": body_graph, "kind": "reduce",
                                                     "shape": s}))
    ca = Var(TensorType(s, f32))
    body2 = Builder()
    col = body2.emit(Op.REDUCE_MAX, [ca], axes=(0,))
    total = body2.emit(Op.REDUCE_SUM, [ca], axes=(0, 1))
    outs2 = (Var(TensorType((4,), f32)), Var(TensorType((), f32)))
    b.nodes.append(Node(Op.FUSED, (outs[0],), outs2, {
        "body": Graph([ca], body2.nodes, [col, total]), "kind": "reduce", "shape": s}))
    for label, var in zip(("y", "row", "col", "total"), outs + outs2):
        b.output(label, var)
    return b


def test_fused_node_one_loop_nest_matches_interpreter():
    b = _fused_graph()
    graph = b.graph()
    kernels = list(generate(graph).kernels.values())
    assert len(kernels) == 2  # one kernel per FUSED node, one loop nest each
    assert all(k.count("for i0 in range(") == 1 and k.count("for i1 in range(") == 1
               for k in kernels)
    assert any("tanh_f32(" in k for k in kernels)  # float32 fast maths (compiler/kernels)
    got = build_numba(graph)(b.values)
    for label, w, g in zip(b.labels, evaluate(graph, b.values), got):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=label)
    assert isinstance(got[3], np.float32)


def test_source_names_match_ir_printout_and_never_shadow_builtins():
    b = Builder()
    x = b.input((2,), np.dtype("float64"))
    var = x
    for _ in range(400):  # names run past 'id', 'if', 'in', 'np', ...
        var = b.emit(Op.NEG, [var])
    b.output("y", var)
    source = generate(b.graph()).source
    compile(source, "<generated>", "exec")  # valid Python: no keyword used as a name
    assert "\n    np = " not in source and "    if = " not in source
    assert "np_ = " in source and "if_ = " in source
    printed = [line.split("let ")[-1].strip() for line in format_graph(b.graph()).splitlines()]
    line = next(text for text in printed if text.startswith("np:"))
    assert f"# {line}\n" in source  # the IR line, named as in the `.ir()` printout


def test_gather_out_of_bounds_raises_index_error():
    b = Builder()
    out = b.emit(Op.GATHER, [b.input((3,), np.dtype("float64")),
                             b.input((2,), np.dtype("int64"), "index")], axis=0)
    b.output("g", out)
    executable = build_numba(b.graph())
    with pytest.raises(IndexError, match="out of bounds for axis 0"):
        executable([np.zeros(3), np.array([0, 7])])
    np.testing.assert_array_equal(executable([np.arange(3.0), np.array([-1, 0])])[0], [2.0, 0.0])


def test_fortran_order_constant_is_handed_to_the_driver_c_contiguous():
    # Constant folding can leave a transposed (Fortran-order) constant; the driver treats
    # constants as C-contiguous, so reshaping one failed to compile before it was copied to
    # C order.
    b = Builder()
    x = b.input((12,), "float32")
    value = np.arange(12.0, dtype=np.float32).reshape(3, 4).T  # (4, 3), F-order
    c = b.emit(Op.CONSTANT, (), value=value)
    flat = b.emit(Op.RESHAPE, (c,), shape=(12,))
    b.output("x * reshape(c)", b.emit(Op.MUL, (x, flat)))
    graph = b.graph()
    got = build_numba(graph)(b.values)[0]
    np.testing.assert_allclose(got, evaluate(graph, b.values)[0], rtol=1e-6)


def test_batched_matmul_reads_transposed_operands_without_copies():
    """q @ k.transpose(0, 2, 1) and its backward: a transposed operand is its source's batch
    read transposed (np.dot takes F order), not a copy made by a loop."""
    from compiler import compile, value_and_grad

    def fn(q, k, v):
        return np.sum(np.tanh(q @ k.transpose(0, 2, 1)) @ v)

    q, k = RNG.standard_normal((3, 4, 5)), RNG.standard_normal((3, 4, 5))
    args = (q.astype(np.float32), k.astype(np.float32),
            RNG.standard_normal((3, 4, 6)).astype(np.float32))
    f = compile(value_and_grad(fn, argnums=(0, 1, 2)))
    (value, grads), source = f(*args), f.source(*args)
    want_value, want_grads = compile(value_and_grad(fn, argnums=(0, 1, 2)),
                                     backend="interpreter")(*args)
    np.testing.assert_allclose(value, want_value, rtol=1e-4, atol=1e-5)
    for g, w in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    assert source.count("[i0].T\n") >= 3  # batch i0 of the source, transposed
    assert "[i0, i2, i1]" not in source  # no loop copying a transposed view
