"""Codegen for the library ops (ir/ops.py's LIBRARY group), registered in
compiler/codegen/ops.py's `EMIT_RULES` through `EXTRA_EMIT_RULES`.

ATAN2 and FMOD are one loop nest each (`np.arctan2`, `np.fmod`: scalar libm calls, never
fused: compiler/codegen/loops.py has no scalar expression for them). ARGSORT, SOLVE, SLOGDET
and CHOLESKY are one call of a cached kernel from compiler/kernels/library.py over
C-contiguous operands with their batch dims flattened, so no graph's cold compile pays for
Numba's sort or LAPACK bindings again.
"""

from __future__ import annotations

from compiler.codegen.emitter import CodeGen, Value
from ir.graph import Node
from ir.ops import Op

KERNELS_MODULE = "compiler.kernels.library"
MPI_KERNELS = "compiler.kernels.mpi"


def emit_binary_libm(gen: CodeGen, node: Node) -> None:
    x, y = node.inputs
    out = node.out
    gen.set_dims(out, gen.dims[x])
    if out.ndim == 0:
        name = gen.name(out)
        gen.line(f"{name} = {_scalar(node, gen.read(x, []), gen.read(y, []))}")
        gen.values[out] = Value("scalar", name)
        return
    name = gen.alloc(out)
    idx = gen.open_loops(gen.dims[out])
    gen.line(f"{name}[{', '.join(idx)}] = {_scalar(node, gen.read(x, idx), gen.read(y, idx))}")
    gen.close_loops(len(idx))


def _scalar(node: Node, a: str, b: str) -> str:
    if node.op == Op.ATAN2:
        return f"np.arctan2({a}, {b})"
    if node.out.dtype.kind == "f":
        return f"np.fmod({a}, {b})"
    # Integers: Numba's np.fmod was wrong for negative divisors (fmod(7, -2) gave 7), so C's
    # remainder is Python's floor modulo moved to a's sign; 0 for y == 0, as NumPy
    r = f"({a} % {b})"
    return f"(0 if {b} == 0 else ({r} - {b} if ({r} != 0) and (({r} < 0) != ({a} < 0)) else {r}))"


def _rows(gen: CodeGen, name: str, var, keep: int) -> str:
    """`name` (a C array holding `var`) viewed with its leading dims as one and its last
    `keep` ones (compiler/kernels/views.py: no reshape routine to compile)."""
    dims = gen.dims[var]
    lead = " * ".join(f"({d})" for d in dims[: len(dims) - keep]) or "1"
    return gen.c_reshape(name, [lead, *dims[len(dims) - keep :]])


def _call_on_rows(gen: CodeGen, node: Node, entry: str, keep: int) -> None:
    """`entry(x rows, out rows)` for an op whose output has its input's shape."""
    (x,) = node.inputs
    gen.set_dims(node.out, gen.dims[x])
    source = gen.array(x, "C")
    name = gen.alloc(node.out)
    gen.fast_imports.add(f"{KERNELS_MODULE}:{entry}")
    gen.line(f"{entry}({_rows(gen, source, x, keep)}, {_rows(gen, name, node.out, keep)})")


def emit_argsort(gen: CodeGen, node: Node) -> None:
    _call_on_rows(gen, node, "argsort_rows", 1)


def emit_cholesky(gen: CodeGen, node: Node) -> None:
    _call_on_rows(gen, node, "cholesky_batched", 2)


def emit_solve(gen: CodeGen, node: Node) -> None:
    a, b = node.inputs
    gen.set_dims(node.out, gen.dims[b])
    ma, mb = gen.array(a, "C"), gen.array(b, "C")
    name = gen.alloc(node.out)
    gen.fast_imports.add(f"{KERNELS_MODULE}:solve_batched")
    gen.line(f"solve_batched({_rows(gen, ma, a, 2)}, {_rows(gen, mb, b, 2)}, "
             f"{_rows(gen, name, node.out, 2)})")


def emit_slogdet(gen: CodeGen, node: Node) -> None:
    (a,) = node.inputs
    gen.set_dims(node.out, (*gen.dims[a][:-2], "2"))
    source = gen.array(a, "C")
    name = gen.alloc(node.out)
    gen.fast_imports.add(f"{KERNELS_MODULE}:slogdet_batched")
    gen.line(f"slogdet_batched({_rows(gen, source, a, 2)}, {_rows(gen, name, node.out, 1)})")


def emit_all_reduce(gen: CodeGen, node: Node) -> None:
    """One in-place MPI_Allreduce of the operand's buffer (compiler/kernels/mpi.py: the
    handles are read at run time, never written here); the outputs are views of it. In place
    only on a fresh array nothing else reads (all_reduce_parts' concatenation), else a copy.
    (The buffer plan treats ALL_REDUCE's outputs as views of its operand.)"""
    from compiler.codegen.plan import FRESH_OPS
    from compiler.kernels.mpi import OP_CODES

    (x,) = node.inputs
    producer = gen.producers.get(x)
    readers = sum(n.inputs.count(x) for n in gen.graph.nodes)
    value = gen.values[x]
    in_place = (producer is not None and producer.op in FRESH_OPS - {Op.CONSTANT}
                and readers == 1
                and x not in gen.graph.outputs and value.kind == "array" and value.layout == "C"
                and not value.owned)
    if in_place:
        source = value.name
    elif x.ndim == 0:
        source = gen.fresh("one")
        gen.line(f"{source} = np.empty(1, np.{x.dtype.name})")
        gen.line(f"{source}[0] = {gen.read(x, [])}")
    else:  # a copy to reduce, while later readers of x still read x
        source = gen.alloc_copy(x)
        gen.copy(source, x, value)
        gen.values[x] = value
    buffer = gen.fresh("reduced")
    gen.line(f"{buffer} = {gen.c_reshape(source, [_size(gen.dims[x])])}")
    gen.fast_imports.add(f"{MPI_KERNELS}:mpi_allreduce")
    reduction = node.params["reduction"]
    gen.line(f"mpi_allreduce({buffer}, {OP_CODES[reduction]})  # {reduction}")
    offset = "0"
    for out in node.outputs:
        dims = gen.resolve_shape(out.shape, tuple(node.inputs))
        gen.set_dims(out, dims)
        name = gen.name(out)
        if out.ndim == 0:
            gen.line(f"{name} = {buffer}[{offset}]")
            gen.values[out] = Value("scalar", name)
        else:
            gen.line(f"{name} = {gen.c_reshape(buffer, gen.dims[out], offset)}")
            gen.values[out] = Value("array", name, "C", False)
        offset = f"{offset} + {_size(gen.dims[out])}"


def _size(dims) -> str:
    return " * ".join(f"({d})" for d in dims) or "1"


EXTRA_EMIT_RULES = {
    Op.ATAN2: emit_binary_libm,
    Op.FMOD: emit_binary_libm,
    Op.ARGSORT: emit_argsort,
    Op.SOLVE: emit_solve,
    Op.SLOGDET: emit_slogdet,
    Op.CHOLESKY: emit_cholesky,
    Op.ALL_REDUCE: emit_all_reduce,
}
