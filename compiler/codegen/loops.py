"""Codegen, per op: how each primitive (and a FUSED node) becomes lines of the Numba driver.

`SCALAR_EXPR` gives the scalar Python expression of an elementwise op (float32 stays float32:
operands and constants are typed, and the transcendental float32 functions come from
compiler/kernels/fastmath.py so loops vectorise). `EMIT_RULES` maps each op to a function
`(gen: CodeGen, node) -> None` that appends lines and records the output's `Value`.

Elementwise nodes, reductions and FUSED loop kernels all go through `emit_kernel` (GEMM
nodes are BLAS calls, compiler/codegen/ops.py): one loop nest
over the iteration shape, 0-d constants hoisted, broadcast inputs read through index maps,
reduction outputs as accumulators (a scalar per output row when the reduced axes are the
innermost ones, else an accumulator array indexed by the kept axes). The nest is planned
first (`plan_groups`, `Nest`): size-1 axes get no loop, and adjacent axes over which every
array is C contiguous share one loop over reshaped views (`a.reshape((n0 * n1, n2))`), so
an all-contiguous kernel is one flat 1-D loop, which LLVM vectorises. Float sums are
`acc += v` with fastmath "reassoc" on the driver (vectorised partial sums); very large
kernels run their outer loop with `numba.prange` (see `PARALLEL_MIN_SIZE`). A donated output
written in place reads its input's old values through its own array, so the update loop
vectorises (see `emit_kernel`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compiler.codegen.emitter import NUMPY_DTYPE_NAMES, CodeGen, Value
from compiler.kernels.parallel import parallel_options
from ir import ops
from ir.graph import Graph, Node, Var
from ir.ops import Op
from ir.printer import Namer
from ir.types import is_float

# op -> name in compiler.kernels.fastmath.FAST_F32, used for float32 operands.
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
    # np.maximum / np.minimum: NaN in either operand gives NaN. `|` (not `or`): no branch,
    # so the choice is a vector select.
    if op == Op.MAX:
        return f"({a} if ({a} >= {args[1]}) | ({a} != {a}) else {args[1]})"
    if op == Op.MIN:
        return f"({a} if ({a} <= {args[1]}) | ({a} != {a}) else {args[1]})"
    if op == Op.WHERE:
        return f"({args[1]} if {a} else {args[2]})"
    raise NotImplementedError(f"no scalar code for {op}")


def _wrap(expr: str, dtype: np.dtype, always: bool = False) -> str:
    """Numba widens int32 arithmetic to int64 (and bool to int): cast back to the IR dtype."""
    if always or dtype in (np.int32, np.bool_):
        return f"{NUMPY_DTYPE_NAMES[dtype]}{expr if expr.startswith('(') else f'({expr})'}"
    return expr


# A kernel iterating over at least this many elements runs its outer loop with numba.prange
# (the driver then compiles with parallel=True). Numba's parfor passes cost compile time for
# the whole driver: the 4M-element chain compiled in 4.8 s instead of 1.0 s, the CNN step
# (several 800K-element kernels) in 86 s CPU instead of 31 s, while 2 threads gained ~15-20%
# on this loaded 2-core machine. So only very large kernels qualify. Tests monkeypatch it.
PARALLEL_MIN_SIZE = 2**21
# In a driver that runs on Numba's threads anyway (`pooled`), a kernel of this many elements
# uses prange. Each prange loop costs ~1-2 s of cold compile (Numba compiles its body again as
# a gufunc): on the transformer step, 2**19 (the 1M-element FFN kernels) took the median from
# 37.3 to 34.9 ms, and 2**17 (every (16, 128, 128) kernel too) gained no more for ~17 s of
# compile.
POOLED_PARALLEL_MIN_SIZE = 2**19
# Float sum/product reductions let LLVM reassociate (fastmath "reassoc" on the driver), so a
# reduction loop vectorises (partial sums per SIMD lane) instead of running one add at a time.
REASSOCIATE_REDUCTIONS = True

MINMAX_KERNELS = "compiler.kernels.minmax"
REDUCE_COMBINE = {Op.REDUCE_SUM: Op.ADD, Op.REDUCE_MAX: Op.MAX, Op.REDUCE_PROD: Op.MUL}
REDUCE_UPDATE = {Op.REDUCE_SUM: "+=", Op.REDUCE_PROD: "*="}  # the forms prange can reduce


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


class BroadcastMap:
    """The index map of a broadcast view: size-1 and missing (leading) axes read index 0."""

    def __init__(self, src_shape: tuple[int, ...], out_ndim: int):
        self.src_shape = tuple(src_shape)
        self.lead = out_ndim - len(src_shape)

    def __call__(self, idx: list[str]) -> list[str]:
        return ["0" if size == 1 else idx[k + self.lead] for k, size in enumerate(self.src_shape)]

    def present(self, axis: int) -> bool:
        """Whether output axis `axis` indexes the source (is not broadcast)."""
        k = axis - self.lead
        return k >= 0 and self.src_shape[k] != 1


def broadcast_view(value: Value, src_shape: tuple[int, ...], out_ndim: int) -> Value:
    """Read a smaller array as if broadcast: size-1 and missing axes index 0."""
    if value.kind == "scalar":
        return value
    return Value("view", value.name, base=value, index_map=BroadcastMap(src_shape, out_ndim))


def _access(value: Value, var_shape: tuple[int, ...], shape: tuple[int, ...]):
    """How a loop reads `value`: "scalar", "full" (a C array of the iteration shape),
    ("bcast", BroadcastMap) over a C array, or "other" (a general view: no axis merging)."""
    if value.kind == "scalar":
        return "scalar"
    if value.kind == "array" and value.layout == "C" and tuple(var_shape) == tuple(shape):
        return "full"
    if (value.kind == "view" and isinstance(value.index_map, BroadcastMap)
            and value.base.kind == "array" and value.base.layout == "C"):
        return ("bcast", value.index_map)
    return "other"


def plan_groups(shape: tuple[int, ...], accesses: list, reduced: list[set[int]]):
    """Loops of the nest: groups of adjacent iteration axes, each group one loop.

    Size-1 axes get no loop (index 0). Two adjacent axes share a loop (their index is one
    flat index into reshaped arrays) when every array the loop reads or writes is C
    contiguous over both (a full array, or a broadcast source indexing both or neither)
    and every reduction reduces both or neither.
    """
    axes = [k for k, size in enumerate(shape) if size != 1]
    mergeable = "other" not in accesses
    groups: list[list[int]] = []
    for k in axes:
        if groups and mergeable and _can_merge(groups[-1][-1], k, accesses, reduced):
            groups[-1].append(k)
        else:
            groups.append([k])
    return [tuple(g) for g in groups]


def _can_merge(p: int, k: int, accesses: list, reduced: list[set[int]]) -> bool:
    for acc in accesses:
        if isinstance(acc, tuple) and acc[1].present(p) != acc[1].present(k):
            return False
    return all((p in axes) == (k in axes) for axes in reduced)


class Nest:
    """The loops of one kernel: `groups` of original axes, one loop (index i<g>) each."""

    def __init__(self, gen: CodeGen, shape, dims, groups):
        self.gen, self.shape, self.dims, self.groups = gen, shape, dims, groups
        self.merged = any(len(g) > 1 for g in groups)
        self.identity = len(groups) == len(shape)  # no size-1 axis dropped, nothing merged
        self.sizes = [" * ".join(dims[k] for k in g) for g in groups]
        self.idx = [f"i{g}" for g in range(len(groups))]
        self.group_of = {k: g for g, axes in enumerate(groups) for k in axes}
        self.reshaped: dict[tuple[str, tuple[int, ...]], str] = {}

    def original(self, gidx: list[str]) -> list[str]:
        """Loop indices -> an index per original axis (valid when nothing is merged)."""
        return [gidx[self.group_of[k]] if k in self.group_of else "0"
                for k in range(len(self.shape))]

    def reader(self, value: Value, access) -> Value:
        """`value` re-expressed to be read with the loop indices (reshaping if merged)."""
        if self.identity or access == "scalar":
            return value
        if not self.merged:
            return Value("view", value.name, base=value, index_map=self.original)
        if access == "full":
            return Value("array", self.reshape(value.name, list(range(len(self.groups)))))
        bmap = access[1]
        present = [g for g, axes in enumerate(self.groups) if bmap.present(axes[0])]
        base = value.base
        if not present:  # one element, read once
            name = self.gen.fresh(f"{base.name}_b")
            self.gen.line(f"{name} = {base.read(['0'] * len(bmap.src_shape))}")
            return Value("scalar", name)
        name = base.name
        if len(present) < len(bmap.src_shape) or any(len(self.groups[g]) > 1 for g in present):
            sizes = [" * ".join(f"{base.name}.shape[{k - bmap.lead}]" for k in self.groups[g])
                     for g in present]
            name = self.gen.fresh(f"{base.name}_f")
            self.gen.line(f"{name} = {self.gen.c_reshape(base.name, sizes)}")
        return Value("view", name, base=Value("array", name),
                     index_map=lambda gidx: [gidx[g] for g in present])

    def reshape(self, name: str, groups: list[int]) -> str:
        """`name` reshaped to the loops of `groups` (once: an in-place update reads and writes
        one reshaped array)."""
        key = (name, tuple(groups))
        if key not in self.reshaped:
            self.reshaped[key] = flat = self.gen.fresh(f"{name}_f")
            self.gen.line(f"{flat} = {self.gen.c_reshape(name, [self.sizes[g] for g in groups])}")
        return self.reshaped[key]

    def target(self, name: str, kept_axes: list[int], ndim: int) -> tuple[str, list[str]]:
        """(array, index in loop indices) for a store into `name` over `kept_axes`."""
        if self.identity:
            return name, [self.idx[self.group_of[k]] for k in kept_axes]
        if not self.merged:
            return name, [self.original(self.idx)[k] for k in kept_axes]
        kept = [g for g, axes in enumerate(self.groups) if axes[0] in kept_axes]
        if not kept:
            return name, ["0"] * ndim
        index = [self.idx[g] for g in kept]
        if len(kept) == ndim and all(len(self.groups[g]) == 1 for g in kept):
            return name, index  # its axes are the loops' axes: no reshape
        return self.reshape(name, kept), index

    def open(self, start: int, stop: int, parallel: bool = False) -> None:
        """Open loops [start, stop) (indices i<start>...); the outermost is a prange if
        `parallel`."""
        if parallel and start == 0 < stop:
            self.gen.line(f"for {self.idx[0]} in numba.prange({self.sizes[0]}):")
            self.gen.depth += 1
            start = 1
        self.gen.open_loops(self.sizes[start:stop], start=start)


def emit_kernel(gen: CodeGen, nodes: list[Node], inputs: dict[Var, Var],
                outputs: list[tuple[Var, Var]], shape: tuple[int, ...], dims: tuple[str, ...],
                local: Callable[[Var], str]) -> None:
    """One loop nest over `shape` (sizes `dims` in code) computing `nodes`; `inputs` maps
    body var -> outer var, `outputs` pairs (body var, outer var)."""
    env = {b: gen.values[v] for b, v in inputs.items()}
    n = len(dims)
    shape = tuple(shape)
    outer_of = dict(outputs)
    reduces = [node for node in nodes if node.op in ops.REDUCTION]
    axes_of = {node: {a % n for a in node.params["axes"]} for node in reduces}

    # A donated output written in place reads its input's old values through its own array:
    # LLVM vectorises `y[i] = y[i] - c * g[i]`, but not `y[i] = x[i] - c * g[i]` with y and x
    # two names for one memory (its runtime alias check fails exactly when in place). (Such an
    # output is never a reduction's: buffers.direct_donations takes loop kernels.)
    in_place = {}
    for _, out in outputs:
        if out in gen.direct:
            readers = [b for b, v in inputs.items() if v is gen.direct[out]]
            gen.set_dims(out, dims)
            in_place[out] = gen.alloc(out, keep=bool(readers))
            env.update((b, gen.values[out]) for b in readers)

    for node in nodes:  # hoisted: constants and broadcast views
        if node.op == Op.CONSTANT:
            name = local(node.out)
            gen.line(f"{name} = {gen.pack_constant(node.params['value'])}")
            env[node.out] = Value("scalar", name)
        elif node.op == Op.BROADCAST_TO:
            (x,) = node.inputs
            env[node.out] = broadcast_view(env[x], x.shape, node.out.ndim)

    read = [v for node in nodes if node.op in ops.ELEMENTWISE or node.op in ops.REDUCTION
            for v in node.inputs] + [b for b, _ in outputs]
    read = [v for v in dict.fromkeys(read) if v in env]
    access = {v: _access(env[v], v.shape, shape) for v in read}
    groups = plan_groups(shape, list(access.values()), list(axes_of.values()))
    nest = Nest(gen, shape, dims, groups)
    for v in read:
        env[v] = nest.reader(env[v], access[v])
    reduced_groups = {node: {g for g, axes in enumerate(groups) if axes[0] in axes_of[node]}
                      for node in reduces}

    ng = len(groups)
    # Each reduction's accumulator lives at a loop depth: a local over the trailing loops it
    # reduces (a scalar started at its init value when those are all the loops it reduces;
    # else an element of the accumulator array read into the local before them and written
    # back after them: a bias gradient summed over (0, 2, 3)), so the inner loop vectorises
    # instead of updating memory LLVM cannot prove distinct from the kernel's stores. Depth
    # `ng`: updated in place innermost (its index varies in the inner loop).
    depth_of = {node: _trailing(reduced_groups[node], ng) for node in reduces}
    parallel = _parallel(gen, shape, ng, reduces, reduced_groups)
    if parallel:
        gen.jit_options["parallel"] = parallel_options()
    if REASSOCIATE_REDUCTIONS and any(
            r.op in REDUCE_UPDATE and is_float(r.out.dtype) for r in reduces):
        gen.jit_options["fastmath"] = {"reassoc"}

    accumulate: list[tuple[Node, str]] = []  # (reduction, accumulator) updated innermost
    before: dict[int, list[str]] = {}  # depth -> lines before loops [depth, ng) open
    after: dict[int, list[str]] = {}  # depth -> lines after they close
    for node in reduces:
        out = outer_of[node.out]
        kept = [k for k in range(n) if k not in axes_of[node]]
        gen.set_dims(out, [dims[k] for k in kept])
        init = reduce_init(node.op, out.dtype)
        depth = depth_of[node]
        if out.ndim == 0:
            acc = gen.name(out)
            gen.line(f"{acc} = {init}")
            gen.values[out] = Value("scalar", acc)
        elif reduced_groups[node] == set(range(depth, ng)):
            array, index = nest.target(gen.alloc(out), kept, out.ndim)
            acc = f"{array}_acc"
            before.setdefault(depth, []).append(f"{acc} = {init}")
            after.setdefault(depth, []).append(f"{array}[{', '.join(index)}] = {acc}")
        else:
            target = gen.alloc(out)
            gen.line(f"{target}.fill({init})")
            array, index = nest.target(target, kept, out.ndim)
            acc = f"{array}[{', '.join(index)}]"
            if depth < ng:
                before.setdefault(depth, []).append(f"{array}_acc = {acc}")
                after.setdefault(depth, []).append(f"{acc} = {array}_acc")
                acc = f"{array}_acc"
        accumulate.append((node, acc))

    stores = []
    for body_var, out in outputs:
        if body_var in outer_of and any(body_var is r.out for r in reduces):
            continue
        gen.set_dims(out, dims)
        if n == 0:
            stores.append((out, None, None))
        else:
            name = in_place[out] if out in in_place else gen.alloc(out)
            stores.append((out, *nest.target(name, list(range(n)), n)))

    idx = nest.idx
    opened = 0
    for depth in sorted(before):
        nest.open(opened, depth, parallel)
        opened = depth
        for text in before[depth]:
            gen.line(text)
    nest.open(opened, ng, parallel)
    opened = ng
    for node in nodes:
        if node.op in ops.ELEMENTWISE:
            name = local(node.out)
            args = [env[v].read(idx) for v in node.inputs]
            in_dtype = node.inputs[1 if node.op == Op.WHERE else 0].dtype if node.inputs else None
            expr = scalar_expr(gen, node.op, in_dtype, node.out.dtype, args, node.params)
            gen.line(f"{name} = {expr}")
            env[node.out] = Value("scalar", name)
    for node, acc in accumulate:
        (x,) = node.inputs
        value = env[x].read(idx)
        if node.op in REDUCE_UPDATE and is_float(x.dtype):
            gen.line(f"{acc} {REDUCE_UPDATE[node.op]} {value}")
            continue
        value_name = f"{local(node.out)}_in"
        gen.line(f"{value_name} = {value}")
        combine = REDUCE_COMBINE[node.op]
        if combine == Op.MAX and x.dtype in (np.float32, np.float64):  # vectorises
            gen.fast_imports.add(f"{MINMAX_KERNELS}:maximum_nan")
            gen.line(f"{acc} = maximum_nan({acc}, {value_name})")
            continue
        gen.line(f"{acc} = {scalar_expr(gen, combine, x.dtype, x.dtype, [acc, value_name], {})}")
    body_var_of = {out: body for body, out in outputs}
    for out, target, index in stores:
        value = env[body_var_of[out]].read(idx)
        if target is None:
            name = gen.name(out)
            gen.line(f"{name} = {value}")
            gen.values[out] = Value("scalar", name)
        else:
            gen.line(f"{target}[{', '.join(index)}] = {value}")
    for depth in sorted(after, reverse=True):
        gen.close_loops(opened - depth)
        opened = depth
        for text in after[depth]:
            gen.line(text)
    gen.close_loops(opened)


def _trailing(reduced: set[int], ng: int) -> int:
    """The first of the trailing loops all in `reduced` (`ng` when the innermost is not)."""
    depth = ng
    while depth > 0 and depth - 1 in reduced:
        depth -= 1
    return depth


def pooled(graph: Graph) -> bool:
    """Whether the driver runs all its work on Numba's thread pool (`Generated.threads`):
    it calls the convolution kernels, or its loop kernels do enough work to share out
    (PARALLEL_MIN_SIZE elements in all). Its matmuls then run on the same threads
    (compiler/kernels/matmul.py) with BLAS held to one thread, and its kernels of
    POOLED_PARALLEL_MIN_SIZE elements or more use prange. Other drivers leave threads to BLAS:
    an MLP step's work is in its matmuls, and BLAS's own threads run them best."""
    loop_work = 0
    for node in graph.nodes:
        if node.op == Op.CONV2D:
            return True
        if node.op in ops.LOOPS:  # its steps run on one thread (codegen/control.py): a pool's
            return False  # idle threads spin through them, taking a core from BLAS
        if node.op == Op.FUSED:
            loop_work += int(np.prod(node.params["shape"]))
        elif node.op in ops.ELEMENTWISE | ops.REDUCTION:
            loop_work += int(np.prod(node.inputs[0].shape))
    return loop_work >= PARALLEL_MIN_SIZE


def _parallel(gen: CodeGen, shape, ng, reduces, reduced_groups) -> bool:
    """prange the outer loop: large enough, and no two iterations update one accumulator
    unless it is a scalar float sum/product over every loop (which prange reduces per
    thread)."""
    least = PARALLEL_MIN_SIZE
    if gen.threads:
        least = min(least, POOLED_PARALLEL_MIN_SIZE)
    if ng == 0 or int(np.prod(shape)) < least:
        return False
    return all(0 not in reduced_groups[r] or (
        reduced_groups[r] == set(range(ng)) and r.op in REDUCE_UPDATE and is_float(r.out.dtype))
        for r in reduces)


def _kernel_prefix(gen: CodeGen) -> str:
    gen.kernel_count += 1
    return f"k{gen.kernel_count}_"


def emit_single(gen: CodeGen, node: Node) -> None:
    """An elementwise or reduction node outside any FUSED node: a kernel of its own over its
    first input's shape (an identity, stop_gradient or a same-dtype cast, is an alias)."""
    x = node.inputs[0]
    if node.op == Op.STOP_GRADIENT or (node.op == Op.CAST and node.out.dtype == x.dtype):
        gen.values[node.out] = gen.values[x]
        gen.set_dims(node.out, gen.dims[x])
        return
    prefix = _kernel_prefix(gen)
    emit_kernel(gen, [node], {v: v for v in node.inputs}, [(node.out, node.out)], x.shape,
                gen.dims[x], lambda var: prefix + gen.name(var))


def comment_body(gen: CodeGen, body: Graph) -> Namer:
    """A FUSED node's body as comments under its own line, named as in the fused dump; returns
    the body's names (a loop kernel's locals are named after them)."""
    namer = Namer()
    for var in body.inputs:
        namer(var)
    for inner in body.nodes:
        gen.comment_node(inner, namer, indent="  ")
    return namer


def emit_fused(gen: CodeGen, node: Node) -> None:
    body = node.params["body"]
    namer = comment_body(gen, body)
    prefix = _kernel_prefix(gen)
    dims = gen.resolve_shape(node.params["shape"], like=node.inputs)
    emit_kernel(gen, body.nodes, dict(zip(body.inputs, node.inputs)),
                list(zip(body.outputs, node.outputs)),
                node.params["shape"], dims, lambda var: prefix + namer(var))
