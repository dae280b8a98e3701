"""Codegen: a lowered graph -> readable Python source for Numba, with ONE driver function.

Takes the "fused" graph (FUSED nodes or single primitives, both handled) and gives a
`Generated`: the module source and the plan of the driver's arguments. The driver is one
`@numba.njit(cache=True)` function, so a call crosses from Python into machine code once:

    def driver(<graph inputs>, <array constants>, <packed 0-d constants>, <work buffers>):
        ...one block per node, each under the IR lines it came from...
        return (<outputs>,)

Then each block that does work (a loop nest, a BLAS call, a convolution) is outlined into a
kernel module of its own, which the driver calls (compiler/codegen/outline.py): kernels are
compiled once per machine and shared by every model, and the driver keeps only glue.

Choices that keep one compiled artefact serving many batch sizes (see `resolve_dim`):
sizes are read from the input arrays (`x.shape[0]`), constants are driver arguments (so the
1/N of a mean is not in the source), and work buffers are arguments allocated by the
executable. The source text is therefore the cache key (runtime/execution/cache.py).

Movement ops are views where possible: broadcast_to, slice and N-d transpose are index maps
applied when a loop reads them (no copy), 2-D transpose is `.T`, reshape of a C array is
`.reshape`. A view is copied into a C buffer only where an op needs an array (matmul,
reshape, returning it). The per-op code lives in compiler/codegen/loops.py (loop nests) and
compiler/codegen/ops.py (movement, indexing, matmul, random; the `EMIT_RULES` table).
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

import numpy as np

from compiler.codegen.buffers import (
    BufferPlan,
    alias_roots,
    direct_donations,
    live_ranges,
    plan_slots,
    prologue,
    view_expr,
)
from compiler.codegen.emitter import (
    NUMPY_DTYPE_NAMES,
    VIEWS,
    ArgSpec,
    CodeGen,
    Generated,
    Value,
)
from compiler.codegen.outline import outline_kernels
from ir.graph import Graph, Var
from ir.printer import format_graph
from ir.types import DTYPES
from runtime.execution.cache import environment_stamp
from runtime.execution.specs import ALLOCATED, ArgKind, DonationMode


def generate(graph: Graph, donate: dict[int, int] | None = None,
             guard: int | None = None, outline: bool = True) -> Generated:
    """Generate the Numba module for `graph` (no Numba import, no compile: text only).

    With `outline=False` only the driver's emission runs, for its buffer plan (the modules
    are neither rendered nor outlined: `plan_buffers`, which the remat pass calls twice).

    `donate` maps output index -> input index whose memory receives that output (see
    compiler/codegen/buffers.py); with `guard` (the index of a 0-d output) those writes are
    made only when that output is finite: a direct write whose kernel runs after the guard
    is known goes to the input or, when the guard is not finite, to a work buffer; the
    others are deferred to the driver's end, under the guard."""
    from compiler.codegen.loops import pooled
    from compiler.codegen.ops import EMIT_RULES

    donate = dict(donate or {})
    gen = CodeGen(graph)
    gen.emit_rules = EMIT_RULES
    gen.threads = pooled(graph)
    input_names = [gen.name(v) for v in graph.inputs]
    # donated 0-d inputs come as 0-d arrays (`<name>_ref`), read once, written at the end
    refs = sorted({i for i in donate.values() if graph.inputs[i].ndim == 0})
    for var, name in zip(graph.inputs, input_names):
        gen.top_names.add(name)
        if var.ndim == 0:
            gen.values[var] = Value("scalar", name)
            gen.set_dims(var, ())
            continue
        gen.values[var] = Value("array", name, "C", owned=False)
        gen.set_dims(var, [f"{name}.shape[{k}]" for k in range(var.ndim)])
        for k, size in enumerate(var.shape):
            gen.dim_by_value.setdefault(size, f"{name}.shape[{k}]")
    gen.guard = None if guard is None else graph.outputs[guard]
    gen.direct = direct_donations(graph, donate, gen.guard)
    gen.deferred = {graph.outputs[o] for o, i in donate.items()
                    if graph.outputs[o] not in gen.direct
                    and graph.outputs[o].type == graph.inputs[i].type
                    and graph.outputs[o] is not graph.inputs[i]}
    for i in refs:
        gen.line(f"{input_names[i]} = {input_names[i]}_ref[()]")
        input_names[i] += "_ref"
        gen.refs.add(graph.inputs[i])
    for k, node in enumerate(graph.nodes):
        gen.node_index = k
        gen.line("")
        gen.comment_node(node)
        EMIT_RULES[node.op](gen, node)
    modes = _donation_modes(gen, graph, donate)
    returned = [i for i in range(len(graph.outputs))
                if i not in modes or modes[i][1] == DonationMode.PYTHON]
    names = [emit_output(gen, graph.outputs[i]) for i in returned]
    _emit_deferred(gen, graph, modes, guard)
    ranges, bases = live_ranges(graph)  # a buffer lives as long as its value's alias class
    for buf in gen.buffers:  # a loop body's buffers (no range here) live for its loop node
        buf.end = max(buf.start, ranges.get(bases.get(buf.var, buf.var), (0, buf.start))[1])
    gen.line("")
    gen.line(f"return ({''.join(r + ', ' for r in names)})")
    plan = plan_slots(gen.buffers)
    if not outline:  # the buffer plan is all that is wanted (plan_buffers)
        return Generated(source="", input_names=input_names, extra_args=gen.extra,
                         out_scalar=[], plan=plan)
    _place_buffers(gen, plan)
    source, kernels = outline_kernels(render_module(gen, input_names), environment_stamp(),
                                      KERNEL_OPTIONS)
    source = _driver_options(source, gen.jit_options)
    return Generated(
        source=source,
        kernels={name: k.text for name, k in kernels.items()},
        input_names=input_names,
        extra_args=gen.extra,
        out_scalar=[v.ndim == 0 for v in graph.outputs],
        out_types=[v.type for v in graph.outputs],
        returned=returned,
        donation=modes,
        plan=plan,
        guard=guard if modes else None,
        refs=[i for i, v in enumerate(graph.inputs) if v in gen.refs],
        threads=gen.threads,
    )


def _donation_modes(gen: CodeGen, graph: Graph, donate: dict[int, int]) -> dict:
    roots = alias_roots(graph)
    modes: dict[int, tuple[int, DonationMode]] = {}
    written = {graph.inputs[i] for o, i in donate.items()
               if graph.outputs[o] in gen.direct or graph.outputs[o] in gen.deferred}
    for o, i in donate.items():
        out, x = graph.outputs[o], graph.inputs[i]
        value = gen.values[out]
        if out is x:
            modes[o] = (i, DonationMode.SAME)
        elif out in gen.direct and value.kind == "array" and value.name == gen.name(out):
            modes[o] = (i, DonationMode.DIRECT)
        elif out in gen.deferred and not (roots.get(out, frozenset()) & written):
            modes[o] = (i, DonationMode.DEFERRED)
        else:
            modes[o] = (i, DonationMode.PYTHON)
    for o, (_, mode) in modes.items():
        if mode == DonationMode.PYTHON and graph.outputs[o] in gen.direct:
            raise AssertionError("a direct donation was not written in place")
    return modes


def _emit_deferred(gen: CodeGen, graph: Graph, modes: dict, guard: int | None) -> None:
    """Copy deferred donated outputs into their inputs, after every read of the inputs."""
    todo = [(graph.outputs[o], graph.inputs[i]) for o, (i, m) in modes.items()
            if m == DonationMode.DEFERRED]
    if not todo:
        return
    gen.line("")
    gen.line("# donated outputs: written into their inputs after every read")
    if guard is not None:
        gen.line(f"if np.isfinite({gen.read(graph.outputs[guard], [])}):")
        gen.depth += 1
    for out, x in todo:
        if x in gen.refs:
            gen.line(f"{gen.name(x)}_ref[()] = {gen.read(out, [])}")
            continue
        idx = gen.open_loops(gen.dims[out])
        gen.line(f"{gen.name(x)}[{', '.join(idx)}] = {gen.read(out, idx)}")
        gen.close_loops(len(idx))
    if guard is not None:
        gen.depth -= 1


def _place_buffers(gen: CodeGen, plan: BufferPlan) -> None:
    """Replace the buffer placeholders by workspace views; add the workspaces and prologue."""
    views = {f"@@ws{b.id}@@": view_expr(b) for b in gen.buffers}
    if views:
        gen.fast_imports.add(f"{VIEWS}:c_view")
        gen.lines = [_substitute(line, views) if "@@ws" in line else line
                     for line in gen.lines]
        gen.lines[:0] = ["    " + line for line in prologue(plan)]
    for dtype, total in plan.totals.items():
        gen.extra.append(ArgSpec(ArgKind.WORKSPACE, f"ws_{DTYPES[dtype]}", shape=(total,),
                                 dtype=dtype))


def _substitute(line: str, views: dict[str, str]) -> str:
    start = line.index("@@ws")
    stop = line.index("@@", start + 4) + 2
    return line[:start] + views[line[start:stop]] + line[stop:]


def emit_output(gen: CodeGen, var: Var) -> str:
    """A returned value must be fresh memory: copy inputs, views and work buffers."""
    value = gen.values[var]
    if (value.kind == "scalar" and var.ndim == 0) or (value.kind == "array" and value.owned):
        return value.name
    name = gen.fresh("out_")
    dims = gen.dims[var]
    gen.line(f"{name} = np.empty(({', '.join(dims)}{',' if len(dims) == 1 else ''}), "
             f"{NUMPY_DTYPE_NAMES[var.dtype]})")
    idx = gen.open_loops(dims)
    gen.line(f"{name}[{', '.join(idx)}] = {value.read(idx)}")
    gen.close_loops(len(idx))
    return name


def render_module(gen: CodeGen, input_names: list[str]) -> str:
    packs = []
    for dtype in sorted(gen.packs, key=lambda d: DTYPES[d]):
        name = f"consts_{DTYPES[dtype]}"
        packs.append(ArgSpec(ArgKind.PACK, name, value=np.array(gen.packs[dtype], dtype=dtype)))
    consts = [a for a in gen.extra if a.kind == ArgKind.CONST]
    buffers = [a for a in gen.extra if a.kind in ALLOCATED]
    gen.extra = consts + packs + buffers
    params = input_names + [a.name for a in gen.extra]
    ir_text = "\n".join(f"# {line}" for line in format_graph(gen.graph).splitlines())
    head = [
        '"""chainjit generated module (edit nothing: the file name is a hash of this text)."""',
        f"# {environment_stamp()}",
        "# The graph (stage 'fused'):",
        ir_text,
        "import numpy as np",
        "import numba",
    ]
    by_module: dict[str, list[str]] = {}  # fast_imports: "name" (fastmath) or "module:name"
    for item in sorted(gen.fast_imports):
        module, _, fn = item.rpartition(":")
        by_module.setdefault(module or "compiler.kernels.fastmath", []).append(fn)
    # each import carries its module's source hash: the driver's machine code links it in
    head += [f"from {m} import {', '.join(fns)}  # source {kernel_source_hash(m)}"
             for m, fns in sorted(by_module.items())]
    head += [
        "",
        "",
        f"@numba.njit({jit_decorator_args(gen.jit_options)})",
        f"def driver({', '.join(params)}):",
    ]
    # a blank line before each node's block, the first too: compiler/codegen/outline.py finds
    # the blocks by them (what precedes the first is the prologue)
    body = [line.rstrip() for line in gen.lines]
    return "\n".join(head + body) + "\n"


# Kernels are called only from drivers' machine code (runtime/execution/linking.py): no
# Python wrapper.
KERNEL_OPTIONS = ('cache=True, error_model="numpy", no_cpython_wrapper=True, '
                  'no_cfunc_wrapper=True')


def _driver_options(source: str, options: dict[str, object]) -> str:
    """The driver's decorator once its work is in kernels: `parallel` only if a prange loop
    and `fastmath` only if a loop stayed in it (each costs compile time)."""
    head, _, body = source.partition("\ndef driver(")
    kept = dict(options)
    if "prange" not in body:
        kept.pop("parallel", None)
    if "for " not in body:
        kept.pop("fastmath", None)
    lines = head.splitlines()
    lines[-1] = f"@numba.njit({jit_decorator_args(kept)})"
    return "\n".join(lines) + "\ndef driver(" + body


def jit_decorator_args(options: dict[str, object]) -> str:
    """`cache=True, error_model="numpy"` plus the options kernels asked for, sorted."""
    extra = "".join(f", {key}={value!r}" for key, value in sorted(options.items()))
    return f'cache=True, error_model="numpy"{extra}'


def plan_buffers(graph: Graph, donate: dict[int, int] | None = None,
                 guard: int | None = None) -> BufferPlan:
    """The work-buffer plan of the driver codegen builds for `graph` (text only: no compile).

    >>> import numpy as np
    >>> from compiler import compile
    >>> from compiler.pipeline import lower
    >>> f = compile(lambda x, w: np.tanh(x @ w) @ w.T)
    >>> g = lower(f.trace(np.ones((8, 8), "f4"), np.ones((8, 8), "f4")).graph)
    >>> plan = plan_buffers(g)
    >>> [(b.offset, b.size, b.start, b.end) for b in plan.buffers]
    [(0, 64, 0, 1), (64, 64, 1, 3)]
    """
    return generate(graph, donate, guard, outline=False).plan


@functools.lru_cache(maxsize=None)
def kernel_source_hash(module: str) -> str:
    """A hash of a chainjit kernel module's source and of the chainjit modules it imports.
    Generated code that imports the module carries it: a driver's cached machine code links
    the kernels in, so new kernel code must change the generated text (the Numba cache key)."""
    root = Path(__file__).resolve().parents[2]
    digest, seen, todo = hashlib.sha256(), set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = root.joinpath(*name.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if not path.is_file():
            continue
        text = path.read_bytes()
        digest.update(name.encode() + text)
        todo += re.findall(r"^\s*(?:from|import) ((?:compiler|ir|runtime)(?:\.\w+)*)",
                           text.decode(), re.M)
    return digest.hexdigest()[:12]
