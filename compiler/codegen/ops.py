"""Codegen for the ops that are not loop kernels: constants, movement, indexing, matmul, random.

Completes `EMIT_RULES` (op -> emitter `(gen, node) -> None`), which compiler/codegen/driver.py walks
in graph order. Movement ops become views where possible (see `Value`); matmul is BLAS
through `np.dot(a, b, out)`, or in a driver on Numba's threads the kernels of
compiler/kernels/matmul.py; a GEMM node (a product accumulated into a donated input,
compiler/passes/gemm_epilogue.py) is one BLAS call with alpha and beta
(compiler/kernels/blas.py, or the threaded kernels); gather/scatter_add bounds-check every
index (negative indices wrap as in NumPy) and raise IndexError naming the node instead of
reading stray memory;
random_uniform reproduces ir/interpreter.py's splitmix64 bits exactly (uint64 wraps).
"""

from __future__ import annotations

import numpy as np

from compiler.codegen.control import emit_scan, emit_while
from compiler.codegen.conv import emit_conv2d
from compiler.codegen.emitter import NUMPY_DTYPE_NAMES, CodeGen, Value
from compiler.codegen.extra_ops import EXTRA_EMIT_RULES
from compiler.codegen.loops import broadcast_view, emit_fused, emit_single
from ir import ops
from ir.graph import Node, Var
from ir.ops import Op
from ir.types import DTYPES

MATMUL_KERNELS = "compiler.kernels.matmul"
BLAS_KERNELS = "compiler.kernels.blas"


def emit_constant(gen: CodeGen, node: Node) -> None:
    value = node.params["value"]
    if value.ndim == 0:
        name = gen.name(node.out)
        gen.line(f"{name} = {gen.pack_constant(value)}")
        gen.values[node.out] = Value("scalar", name)
        gen.set_dims(node.out, ())
    else:
        gen.array_constant(node.out, value)
        gen.line(f"# ({gen.name(node.out)} is a driver argument)")


def _alias(gen: CodeGen, node: Node) -> None:
    (x,) = node.inputs
    gen.values[node.out] = gen.values[x]
    gen.set_dims(node.out, gen.dims[x])


def emit_broadcast(gen: CodeGen, node: Node) -> None:
    (x,) = node.inputs
    out = node.out
    lead = out.ndim - x.ndim
    dims = [gen.resolve_dim(d) for d in out.shape]
    for k, size in enumerate(x.shape):
        if size == out.shape[k + lead] and size != 1:
            dims[k + lead] = gen.dims[x][k]
    gen.set_dims(out, dims)
    gen.values[out] = broadcast_view(gen.values[x], x.shape, out.ndim)
    gen.line("# (a view: reads index the source)")


def emit_transpose(gen: CodeGen, node: Node) -> None:
    (x,) = node.inputs
    perm = tuple(node.params["perm"])
    if perm == tuple(range(x.ndim)):
        return _alias(gen, node)
    gen.set_dims(node.out, [gen.dims[x][p] for p in perm])
    value = gen.values[x]
    if value.kind == "array" and value.layout in "CF" and x.ndim == 2:
        name = gen.name(node.out)
        gen.line(f"{name} = {value.name}.T")
        gen.values[node.out] = Value("array", name, "F" if value.layout == "C" else "C",
                                     value.owned)
        return

    def index_map(idx: list[str]) -> list[str]:
        src = [""] * len(perm)
        for k, p in enumerate(perm):
            src[p] = idx[k]
        return src

    gen.values[node.out] = Value("view", value.name, base=value, index_map=index_map)
    gen.line("# (a view: reads index the source)")


def emit_slice(gen: CodeGen, node: Node) -> None:
    (x,) = node.inputs
    starts, stops, steps = node.params["starts"], node.params["stops"], node.params["steps"]
    if x.ndim == 0 or node.out.shape == x.shape:
        return _alias(gen, node)
    dims = []
    for k, (start, stop, step) in enumerate(zip(starts, stops, steps)):
        whole = start == 0 and step == 1 and stop == x.shape[k]
        dims.append(gen.dims[x][k] if whole else gen.resolve_dim(node.out.shape[k]))
    gen.set_dims(node.out, dims)

    def index_map(idx: list[str]) -> list[str]:
        return [_affine(start, step, i) for i, start, step in zip(idx, starts, steps)]

    value = gen.values[x]
    gen.values[node.out] = Value("view", value.name, base=value, index_map=index_map)
    gen.line("# (a view: reads index the source)")


def emit_reshape(gen: CodeGen, node: Node) -> None:
    (x,) = node.inputs
    out = node.out
    if out.shape == x.shape:
        return _alias(gen, node)
    name = gen.name(out)
    if out.ndim == 0:  # one element
        gen.line(f"{name} = {gen.read(x, ['0'] * x.ndim)}")
        gen.values[out] = Value("scalar", name)
        gen.set_dims(out, ())
        return
    if x.ndim == 0:  # a scalar seen as shape (1, 1, ...): reads ignore the index
        gen.values[out] = gen.values[x]
        gen.set_dims(out, ["1"] * out.ndim)
        return
    source = gen.array(x, "C")
    dims = [gen.resolve_dim(d) for d in out.shape]
    literal = [k for k, d in enumerate(dims) if d.isdigit() and d not in ("0", "1")]
    if len(literal) == 1:  # derive it from the size, so a new batch size keeps the source
        # From the source's dimension expressions (built from input shapes only), never from
        # `source.size`: workspace sizes are computed in the prologue, before `source` exists.
        size = " * ".join(f"({d})" for d in gen.dims[x]) or "1"
        rest = " * ".join(d for k, d in enumerate(dims) if k != literal[0]) or "1"
        dims[literal[0]] = f"({size} // ({rest}))"
    gen.set_dims(out, dims)
    gen.line(f"{name} = {gen.c_reshape(source, gen.dims[out])}")
    gen.values[out] = Value("array", name, "C", gen.values[x].owned)


def emit_pad(gen: CodeGen, node: Node) -> None:
    (x,) = node.inputs
    lows, highs, interiors = (node.params[k] for k in ("lows", "highs", "interiors"))
    dims = []
    for k, (lo, hi, inner) in enumerate(zip(lows, highs, interiors)):
        if inner == 0:
            dims.append(gen.dims[x][k] + (f" + {lo + hi}" if lo + hi else ""))
        else:
            dims.append(gen.resolve_dim(node.out.shape[k]))
    gen.set_dims(node.out, dims)
    name = gen.alloc(node.out, zero=True)
    idx = gen.open_loops(gen.dims[x])
    target = [
        _affine(lo, inner + 1, i) for i, lo, inner in zip(idx, lows, interiors)
    ]
    gen.line(f"{name}[{', '.join(target)}] = {gen.read(x, idx)}")
    gen.close_loops(len(idx))


def _affine(start: int, step: int, index: str) -> str:
    term = index if step == 1 else f"{step} * {index}"
    return term if start == 0 else f"{start} + {term}"


def emit_concatenate(gen: CodeGen, node: Node) -> None:
    axis = node.params["axis"]
    first = node.inputs[0]
    dims = list(gen.dims[first])
    dims[axis] = " + ".join(gen.dims[x][axis] for x in node.inputs)
    gen.set_dims(node.out, dims)
    name = gen.alloc(node.out)
    offset = ""
    for x in node.inputs:
        idx = gen.open_loops(gen.dims[x])
        target = list(idx)
        target[axis] = f"{offset}{idx[axis]}"
        gen.line(f"{name}[{', '.join(target)}] = {gen.read(x, idx)}")
        gen.close_loops(len(idx))
        offset += f"{gen.dims[x][axis]} + "


def _checked_index(gen: CodeGen, node: Node, local: str, read: str, size: str,
                   axis: int) -> None:
    # No shapes in the message: a new batch size must generate the same code.
    args = " ".join(gen.name(v) for v in node.inputs)
    where = f"{gen.name(node.out)} = {node.op.value} {args}"
    if node.source is not None:
        where += f" at {node.source}"
    where = where.replace('"', "'")
    gen.line(f"{local} = {read}")
    gen.line(f"if {local} < 0:")
    gen.line(f"    {local} += {size}")
    gen.line(f"if {local} < 0 or {local} >= {size}:")
    gen.line(f'    raise IndexError("index out of bounds for axis {axis} in: {where}")')


def emit_gather(gen: CodeGen, node: Node) -> None:
    x, idx_var = node.inputs
    axis = node.params["axis"]
    xd, jd = gen.dims[x], gen.dims[idx_var]
    gen.set_dims(node.out, xd[:axis] + jd + xd[axis + 1:])
    out = node.out
    local = gen.fresh("j_")
    if out.ndim == 0:
        _checked_index(gen, node, local, gen.read(idx_var, []), xd[axis], axis)
        name = gen.name(out)
        gen.line(f"{name} = {gen.read(x, [local])}")
        gen.values[out] = Value("scalar", name)
        return
    name = gen.alloc(out)
    idx = gen.open_loops(gen.dims[out])
    r = idx_var.ndim
    _checked_index(gen, node, local, gen.read(idx_var, idx[axis:axis + r]), xd[axis], axis)
    source = idx[:axis] + [local] + idx[axis + r:]
    gen.line(f"{name}[{', '.join(idx)}] = {gen.read(x, source)}")
    gen.close_loops(len(idx))


def emit_scatter_add(gen: CodeGen, node: Node) -> None:
    g, idx_var = node.inputs
    axis, size = node.params["axis"], node.params["size"]
    r = idx_var.ndim
    gd = gen.dims[g]
    size_dim = gen.resolve_dim(size)
    gen.set_dims(node.out, gd[:axis] + (size_dim,) + gd[axis + r:])
    name = gen.alloc(node.out, zero=True)
    local = gen.fresh("j_")
    idx = gen.open_loops(gd)
    _checked_index(gen, node, local, gen.read(idx_var, idx[axis:axis + r]), size_dim, axis)
    target = ", ".join(idx[:axis] + [local] + idx[axis + r:])
    gen.line(f"{name}[{target}] += {gen.read(g, idx)}")
    gen.close_loops(len(idx))


def _on_numba_threads(gen: CodeGen) -> bool:
    """Matmuls run on Numba's threads in a pooled driver (Generated.threads), when BLAS can be
    held to one thread while it runs: each of Numba's threads calls BLAS, and a threaded BLAS
    under each of them would ask for threads² cores (the transformer step ran 16x slower)."""
    from runtime.execution.blas import blas_thread_controls

    return gen.threads and blas_thread_controls() is not None


def _product(gen: CodeGen, a: str, b: str, out: str, dtype, alpha: float | str = 1.0,
             beta: float = 0.0) -> None:
    """out = alpha a @ b + beta out for 2-D arrays: in a pooled driver the threaded kernel;
    else `np.dot` for a plain product, one BLAS call with alpha and beta for the rest. alpha
    is a number or the name of a local holding one."""
    may_be_zero = isinstance(alpha, str) or alpha == 0  # a run-time rate: see blas.gemm_any
    alpha = alpha if isinstance(alpha, str) else repr(alpha)
    if _on_numba_threads(gen):
        entry = f"matmul{'_any' if may_be_zero else ''}_{DTYPES[np.dtype(dtype)]}"
        gen.fast_imports.add(f"{MATMUL_KERNELS}:{entry}")
        gen.line(f"{entry}({a}, {b}, {out}, {alpha}, {beta!r})")
    elif (alpha, beta) == ("1.0", 0.0):
        gen.line(f"np.dot({a}, {b}, {out})")
    else:
        entry = "gemm_any" if may_be_zero else "gemm"
        gen.fast_imports.add(f"{BLAS_KERNELS}:{entry}")
        gen.line(f"{entry}({a}, {b}, {out}, {alpha}, {beta!r})")


def emit_matmul(gen: CodeGen, node: Node) -> None:
    """`np.dot` on BLAS's threads, or in a pooled driver the kernels of
    compiler/kernels/matmul.py, which share the product out between Numba's threads."""
    x, w = node.inputs
    out = node.out
    gen.set_dims(out, gen.dims[x][:-1] + gen.dims[w][-1:])
    if out.ndim == 2:
        a, b = gen.array(x, "CF"), gen.array(w, "CF")
        _product(gen, a, b, gen.alloc(out), out.dtype)
        return
    on_threads = _on_numba_threads(gen)
    batch = " * ".join(gen.dims[out][:-2])
    (a, ta), (b, tb) = _batch_operand(gen, x, batch), _batch_operand(gen, w, batch)
    name = gen.alloc(out)
    m, n = gen.dims[x][-2], gen.dims[w][-1]
    out3 = gen.c_reshape(name, [batch, m, n])
    if on_threads:
        entry = f"matmul_batched_{DTYPES[np.dtype(out.dtype)]}"
        gen.fast_imports.add(f"{MATMUL_KERNELS}:{entry}")
        gen.line(f"{entry}({a}, {ta}, {b}, {tb}, {out3})")
        return
    gen.line(f"for i0 in range({batch}):")
    # operands as locals: a `.T` inside np.dot's arguments left Numba's type inference
    # undecided in a long function (the transformer step's backward)
    ax, bx = gen.fresh(f"{gen.name(x)}_b"), gen.fresh(f"{gen.name(w)}_b")
    gen.line(f"    {ax} = {a}[i0]{'.T' if ta else ''}")
    gen.line(f"    {bx} = {b}[i0]{'.T' if tb else ''}")
    gen.line(f"    np.dot({ax}, {bx}, {out3}[i0])")


def emit_gemm(gen: CodeGen, node: Node) -> None:
    """A GEMM node (compiler/passes/gemm_epilogue.py), out = alpha t a @ b + beta x (t a
    traced 0-d scale when there is a fourth input, else 1), as one BLAS call accumulating
    into out: out is x's own memory when x is donated (an SGD update in place), else it
    starts as a copy of x. Its IR comment is the node's own line (the driver's, or a loop
    body's)."""
    x, w, acc, *scale = node.inputs
    out = node.out
    gen.set_dims(out, gen.dims[x][:-1] + gen.dims[w][-1:])
    a, b = gen.array(x, "CF"), gen.array(w, "CF")
    name = gen.alloc(out, keep=True)
    if gen.direct.get(out) is not acc:
        gen.copy(name, acc)
    alpha, beta = float(node.params["alpha"]), float(node.params["beta"])
    if scale:  # a rate known at run time (0 too: the kernels keep the product's NaNs)
        alpha, coefficient = gen.fresh("alpha_"), alpha
        gen.line(f"{alpha} = {coefficient!r} * {gen.read(scale[0], [])}")
    _product(gen, a, b, name, out.dtype, alpha, beta)


def _batch_operand(gen: CodeGen, var: Var, batch: str) -> tuple[str, bool]:
    """A batched matmul operand as a 3-D C array expression and whether each of its batch
    items is read transposed. A transpose of the last two axes of a C array
    (`q @ k.transpose(0, 2, 1)`, and most batched matmuls of a backward) is read as that
    array, transposed: np.dot takes F order, so no copy."""
    producer = gen.producers.get(var)
    if producer is not None and producer.op == Op.TRANSPOSE:
        (source,) = producer.inputs
        last_two = tuple(range(var.ndim - 2)) + (var.ndim - 1, var.ndim - 2)
        value = gen.values[source]
        if tuple(producer.params["perm"]) == last_two and value.kind == "array" \
                and value.layout == "C":
            rows, cols = gen.dims[source][-2:]
            return gen.c_reshape(value.name, [batch, rows, cols]), True
    rows, cols = gen.dims[var][-2:]
    return gen.c_reshape(gen.array(var, "C"), [batch, rows, cols]), False


SPLITMIX = ("0x9E3779B97F4A7C15", "0xBF58476D1CE4E5B9", "0x94D049BB133111EB")


def emit_random_uniform(gen: CodeGen, node: Node) -> None:
    (key,) = node.inputs
    out = node.out
    dims = [gen.resolve_dim(d) for d in out.shape]
    gen.set_dims(out, dims)
    seed = gen.fresh("seed_")
    gen.line(f"{seed} = np.uint64(np.int64({gen.read(key, [])})) * np.uint64({SPLITMIX[0]})")
    scalar = out.ndim == 0
    name = gen.name(out) if scalar else gen.alloc(out)
    idx = gen.open_loops(dims)
    flat = "0"
    for k, i in enumerate(idx):
        flat = i if k == 0 else f"({flat}) * {dims[k]} + {i}"
    z = gen.fresh("z_")
    u64 = "np.uint64"
    gen.line(f"{z} = {u64}({flat}) * {u64}({SPLITMIX[1]}) + {seed}")
    gen.line(f"{z} ^= {z} >> {u64}(30)")
    gen.line(f"{z} *= {u64}({SPLITMIX[1]})")
    gen.line(f"{z} ^= {z} >> {u64}(27)")
    gen.line(f"{z} *= {u64}({SPLITMIX[2]})")
    gen.line(f"{z} ^= {z} >> {u64}(31)")
    value = f"{NUMPY_DTYPE_NAMES[out.dtype]}(np.float64({z} >> {u64}(40)) * 5.9604644775390625e-08)"
    gen.line(f"{name}{'' if scalar else '[' + ', '.join(idx) + ']'} = {value}")
    gen.close_loops(len(idx))
    if scalar:
        gen.values[out] = Value("scalar", name)


# op -> emitter; every primitive is handled as a single node, and FUSED as one loop nest.
EMIT_RULES = {
    **{op: emit_single for op in ops.ELEMENTWISE | ops.REDUCTION},
    Op.CONSTANT: emit_constant,
    Op.BROADCAST_TO: emit_broadcast,
    Op.RESHAPE: emit_reshape,
    Op.TRANSPOSE: emit_transpose,
    Op.SLICE: emit_slice,
    Op.PAD: emit_pad,
    Op.CONCATENATE: emit_concatenate,
    Op.GATHER: emit_gather,
    Op.SCATTER_ADD: emit_scatter_add,
    Op.MATMUL: emit_matmul,
    Op.GEMM: emit_gemm,
    Op.CONV2D: emit_conv2d,  # compiler/codegen/conv.py
    Op.RANDOM_UNIFORM: emit_random_uniform,
    Op.FUSED: emit_fused,  # loop kernels: compiler/codegen/loops.py
    Op.SCAN: emit_scan,  # loops in the driver: compiler/codegen/control.py
    Op.WHILE: emit_while,
    **EXTRA_EMIT_RULES,  # library ops: compiler/codegen/extra_ops.py
}
