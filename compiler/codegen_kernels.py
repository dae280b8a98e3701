"""Codegen, per op: how each primitive (and a FUSED node) becomes lines of the Numba driver.

`SCALAR_EXPR` gives the scalar Python expression of an elementwise op (float32 stays float32:
operands and constants are typed, and the transcendental float32 functions come from
compiler/fastmath.py so loops vectorise). `EMIT_RULES` maps each op to a function
`(gen: CodeGen, node) -> None` that appends lines and records the output's `Value`.

Elementwise nodes, reductions and FUSED nodes all go through `emit_kernel`: one loop nest
over the iteration shape, 0-d constants hoisted, broadcast inputs read through index maps,
reduction outputs as accumulators (a scalar per output row when the reduced axes are the
innermost ones, else an accumulator array indexed by the kept axes).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compiler.codegen import NUMPY_DTYPE_NAMES, CodeGen, Value
from ir import ops
from ir.graph import Node, Var
from ir.ops import Op
from ir.printer import Namer
from ir.types import is_float

# op -> name in compiler.fastmath.FAST_F32, used for float32 operands.
FAST_F32_NAMES = {Op.EXP: "exp_f32", Op.EXPM1: "expm1_f32", Op.LOG: "log_f32",
                  Op.LOG1P: "log1p_f32", Op.TANH: "tanh_f32", Op.LOGISTIC: "sigmoid_f32"}
NUMPY_UNARY = {Op.EXP: "np.exp", Op.LOG: "np.log", Op.LOG1P: "np.log1p", Op.EXPM1: "np.expm1",
               Op.SQRT: "np.sqrt", Op.TANH: "np.tanh", Op.SIN: "np.sin", Op.COS: "np.cos",
               Op.ABS: "np.abs", Op.SIGN: "np.sign"}
INFIX = {Op.ADD: "+", Op.SUB: "-", Op.MUL: "*", Op.POW: "**", Op.LT: "<", Op.LE: "<=",
         Op.GT: ">", Op.GE: ">=", Op.EQ: "==", Op.NE: "!="}


def scalar_expr(gen: CodeGen, op: Op, in_dtype: np.dtype, out_dtype: np.dtype,
                args: list[str], params: dict) -> str:
    """The scalar expression of an elementwise op; `args` are names or array reads."""
    a = args[0]
    floating = is_float(in_dtype)
    if op in FAST_F32_NAMES and in_dtype == np.float32:
        return f"{gen.fast_function(FAST_F32_NAMES[op])}({a})"
    if op == Op.LOGISTIC:
        return f"(0.5 * np.tanh(0.5 * {a}) + 0.5)"  # as ir/interpreter.py: no overflow
    if op in NUMPY_UNARY:
        return _wrap(f"{NUMPY_UNARY[op]}({a})", out_dtype)
    if op == Op.NEG:
        return _wrap(f"(-{a})", out_dtype)
    if op == Op.STOP_GRADIENT:
        return a
    if op == Op.CAST:
        if out_dtype == np.bool_:
            return f"({a} != 0)"
        return f"{NUMPY_DTYPE_NAMES[out_dtype]}({a})"
    if op == Op.DIV:
        return f"({a} / {args[1]})" if floating else _wrap(f"({a} / {args[1]})", out_dtype, True)
    if op in INFIX:
        expr = f"({a} {INFIX[op]} {args[1]})"
        return expr if op in ops.COMPARISON else _wrap(expr, out_dtype)
    if op == Op.MAX:  # np.maximum: NaN in either operand gives NaN
        return f"({a} if {a} >= {args[1]} or {a} != {a} else {args[1]})"
    if op == Op.MIN:
        return f"({a} if {a} <= {args[1]} or {a} != {a} else {args[1]})"
    if op == Op.WHERE:
        return f"({args[1]} if {a} else {args[2]})"
    raise NotImplementedError(f"no scalar code for {op}")


def _wrap(expr: str, dtype: np.dtype, always: bool = False) -> str:
    """Numba widens int32 arithmetic to int64 (and bool to int): cast back to the IR dtype."""
    if always or dtype in (np.int32, np.bool_):
        return f"{NUMPY_DTYPE_NAMES[dtype]}{expr if expr.startswith('(') else f'({expr})'}"
    return expr


REDUCE_COMBINE = {Op.REDUCE_SUM: Op.ADD, Op.REDUCE_MAX: Op.MAX, Op.REDUCE_PROD: Op.MUL}


def reduce_init(op: Op, dtype: np.dtype) -> str:
    ctor = NUMPY_DTYPE_NAMES[dtype]
    if op == Op.REDUCE_SUM:
        return f"{ctor}(0)"
    if op == Op.REDUCE_PROD:
        return f"{ctor}(1)"
    if is_float(dtype):
        return f"{ctor}(-np.inf)"
    if dtype == np.bool_:
        return "False"
    return f"{ctor}({np.iinfo(dtype).min})"


def broadcast_view(value: Value, src_shape: tuple[int, ...], out_ndim: int) -> Value:
    """Read a smaller array as if broadcast: size-1 and missing axes index 0."""
    if value.kind == "scalar":
        return value
    lead = out_ndim - len(src_shape)
    return Value("view", value.name, base=value, index_map=lambda idx: [
        "0" if size == 1 else idx[k + lead] for k, size in enumerate(src_shape)])


def emit_kernel(gen: CodeGen, nodes: list[Node], env: dict[Var, Value],
                outputs: list[tuple[Var, Var]], dims: tuple[str, ...],
                local: Callable[[Var], str]) -> None:
    """One loop nest over `dims` computing `nodes`; `outputs` pairs (body var, outer var)."""
    env = dict(env)
    n = len(dims)
    outer_of = dict(outputs)
    reduces = [node for node in nodes if node.op in ops.REDUCTION]
    axes_of = {node: tuple(sorted(a % n for a in node.params["axes"])) for node in reduces}
    split = n  # loops [0, split) are kept axes, [split, n) reduced, for scalar accumulators
    if reduces and len(set(axes_of.values())) == 1:
        axes = next(iter(axes_of.values()))
        if axes == tuple(range(n - len(axes), n)):
            split = n - len(axes)
    scalar_acc = reduces and split < n or (reduces and n == 0)

    for node in nodes:  # hoisted: constants and broadcast views
        if node.op == Op.CONSTANT:
            name = local(node.out)
            gen.line(f"{name} = {gen.pack_constant(node.params['value'])}")
            env[node.out] = Value("scalar", name)
        elif node.op == Op.BROADCAST_TO:
            (x,) = node.inputs
            env[node.out] = broadcast_view(env[x], x.shape, node.out.ndim)

    accumulate: list[tuple[Node, str]] = []  # (reduction, accumulator) updated innermost
    write_back: list[str] = []  # lines after the reduced loops, at depth `split`
    init_at_split: list[str] = []
    for node in reduces:
        out = outer_of[node.out]
        kept = [k for k in range(n) if k not in axes_of[node]]
        gen.set_dims(out, [dims[k] for k in kept])
        init = reduce_init(node.op, out.dtype)
        if out.ndim == 0:
            acc = gen.name(out)
            gen.line(f"{acc} = {init}")
            gen.values[out] = Value("scalar", acc)
        elif scalar_acc:
            target = gen.alloc(out)
            acc = f"{target}_acc"
            init_at_split.append(f"{acc} = {init}")
            write_back.append(f"{target}[{', '.join(f'i{k}' for k in kept)}] = {acc}")
        else:
            target = gen.alloc(out)
            gen.line(f"{target}.fill({init})")
            acc = f"{target}[{', '.join(f'i{k}' for k in kept)}]"
        accumulate.append((node, acc))

    stores = []
    for body_var, out in outputs:
        if body_var in outer_of and any(body_var is r.out for r in reduces):
            continue
        gen.set_dims(out, dims)
        if n == 0:
            stores.append((out, None))
        else:
            stores.append((out, gen.alloc(out)))

    idx = gen.open_loops(dims[:split])
    for text in init_at_split:
        gen.line(text)
    idx += gen.open_loops(dims[split:], start=split)
    for node in nodes:
        if node.op in ops.ELEMENTWISE:
            name = local(node.out)
            args = [env[v].read(idx) for v in node.inputs]
            expr = scalar_expr(gen, node.op, node.inputs[0].dtype if node.inputs else None,
                               node.out.dtype, args, node.params)
            if node.op == Op.WHERE:
                expr = scalar_expr(gen, node.op, node.inputs[1].dtype, node.out.dtype, args, {})
            gen.line(f"{name} = {expr}")
            env[node.out] = Value("scalar", name)
    for node, acc in accumulate:
        (x,) = node.inputs
        value = f"{local(node.out)}_in"
        gen.line(f"{value} = {env[x].read(idx)}")
        combine = REDUCE_COMBINE[node.op]
        gen.line(f"{acc} = {scalar_expr(gen, combine, x.dtype, x.dtype, [acc, value], {})}")
    body_var_of = {out: body for body, out in outputs}
    for out, target in stores:
        value = env[body_var_of[out]].read(idx)
        if target is None:
            name = gen.name(out)
            gen.line(f"{name} = {value}")
            gen.values[out] = Value("scalar", name)
        else:
            gen.line(f"{target}[{', '.join(idx)}] = {value}")
    gen.close_loops(n - split)
    for text in write_back:
        gen.line(text)
    gen.close_loops(split)


def _kernel_prefix(gen: CodeGen) -> str:
    gen.kernel_count += 1
    return f"k{gen.kernel_count}_"


def emit_elementwise(gen: CodeGen, node: Node) -> None:
    x = node.inputs[0]
    if node.op == Op.STOP_GRADIENT or (node.op == Op.CAST and node.out.dtype == x.dtype):
        gen.values[node.out] = gen.values[x]
        gen.set_dims(node.out, gen.dims[x])
        return
    prefix = _kernel_prefix(gen)
    env = {v: gen.values[v] for v in node.inputs}
    emit_kernel(gen, [node], env, [(node.out, node.out)], gen.dims[x],
                lambda var: prefix + gen.name(var))


def emit_reduce(gen: CodeGen, node: Node) -> None:
    (x,) = node.inputs
    prefix = _kernel_prefix(gen)
    emit_kernel(gen, [node], {x: gen.values[x]}, [(node.out, node.out)], gen.dims[x],
                lambda var: prefix + gen.name(var))


def emit_fused(gen: CodeGen, node: Node) -> None:
    body = node.params["body"]
    namer = Namer()
    for var in body.inputs:
        namer(var)
    for inner in body.nodes:
        gen.comment_node(inner, namer, indent="  ")
    prefix = _kernel_prefix(gen)
    env = {b: gen.values[v] for b, v in zip(body.inputs, node.inputs)}
    dims = gen.resolve_shape(node.params["shape"], like=node.inputs)
    emit_kernel(gen, body.nodes, env, list(zip(body.outputs, node.outputs)), dims,
                lambda var: prefix + namer(var))
