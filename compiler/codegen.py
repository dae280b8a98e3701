"""Codegen: a lowered graph -> readable Python source for Numba, with ONE driver function.

Takes the "fused" graph (FUSED nodes or single primitives, both handled) and gives a
`Generated`: the module source and the plan of the driver's arguments. The driver is one
`@numba.njit(cache=True)` function, so a call crosses from Python into machine code once:

    def driver(<graph inputs>, <array constants>, <packed 0-d constants>, <work buffers>):
        ...one block per node, each under the IR lines it came from...
        return (<outputs>,)

(A long driver's body is then cut into `driver_part<k>` functions it calls in order, which
compile sooner and keep LLVM inlining fastmath: compiler/codegen_split.py.)

Choices that keep one compiled artefact serving many batch sizes (see `resolve_dim`):
sizes are read from the input arrays (`x.shape[0]`), constants are driver arguments (so the
1/N of a mean is not in the source), and work buffers are arguments allocated by the
executable. The source text is therefore the cache key (runtime/cache.py).

Movement ops are views where possible: broadcast_to, slice and N-d transpose are index maps
applied when a loop reads them (no copy), 2-D transpose is `.T`, reshape of a C array is
`.reshape`. A view is copied into a C buffer only where an op needs an array (matmul,
reshape, returning it). The per-op code lives in compiler/codegen_kernels.py (loop nests) and
compiler/codegen_ops.py (movement, indexing, matmul, random; the `EMIT_RULES` table).
"""

from __future__ import annotations

import builtins
import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from compiler.codegen_buffers import (
    Buffer,
    BufferPlan,
    alias_roots,
    direct_donations,
    live_ranges,
    plan_slots,
    plannable,
    prologue,
    view_expr,
)
from compiler.codegen_split import split_driver
from ir.graph import Graph, Node, Var
from ir.printer import Namer, format_graph, format_node, node_comment
from ir.types import DTYPES

# Names the generated module uses itself: IR names equal to these get a trailing "_".
RESERVED = frozenset({"np", "numba", "math", "driver"}) | frozenset(dir(builtins))
NUMPY_DTYPE_NAMES = {
    np.dtype(np.float32): "np.float32",
    np.dtype(np.float64): "np.float64",
    np.dtype(np.int32): "np.int32",
    np.dtype(np.int64): "np.int64",
    np.dtype(np.bool_): "np.bool_",
}


@dataclass
class Value:
    """How generated code reads one IR var.

    kind "array": a real Numba array `name` (layout "C", "F" or "A"); "scalar": a local;
    "view": element `idx` is `base.read(index_map(idx))` (broadcast, slice, transpose).
    `owned`: the array was allocated by this call (safe to return to the user).
    """

    kind: str
    name: str
    layout: str = "C"
    owned: bool = False
    base: Value | None = None
    index_map: Callable[[list[str]], list[str]] | None = None

    def read(self, idx: list[str]) -> str:
        if self.kind == "scalar":
            return self.name
        if self.kind == "view":
            return self.base.read(self.index_map(idx))
        return f"{self.name}[{', '.join(idx)}]" if idx else f"{self.name}[()]"


@dataclass
class ArgSpec:
    """One driver argument after the graph inputs: where the executable gets it."""

    # "const" (array constant), "pack" (0-d constants of one dtype), "workspace" (the flat
    # array of one dtype the work buffers are carved from), "buffer" (a work buffer whose
    # size the driver cannot compute at its start: its own argument)
    kind: str
    name: str
    value: np.ndarray | None = None  # const / pack
    shape: tuple[int, ...] = ()  # buffer
    dtype: np.dtype | None = None


@dataclass
class Generated:
    source: str
    input_names: list[str]
    extra_args: list[ArgSpec]
    out_scalar: list[bool]  # outputs returned as scalars (0-d)
    out_types: list = field(default_factory=list)
    returned: list[int] = field(default_factory=list)  # output indices the driver returns
    # donated output index -> (input index, mode): "same" (the input itself), "direct"
    # (written in place by its kernel), "deferred" (copied in at the driver's end), "python"
    donation: dict[int, tuple[int, str]] = field(default_factory=dict)
    plan: BufferPlan | None = None
    guard: int | None = None  # donated writes only when this 0-d output is finite
    refs: list[int] = field(default_factory=list)  # 0-d inputs passed as 0-d arrays
    # the driver runs its work on Numba's threads (convolutions, matmuls, large loop kernels;
    # codegen_kernels.pooled): BLAS is held to one thread while it runs (runtime/blas.py)
    threads: bool = False


class CodeGen:
    """Builds the driver for one graph. Per-op emitters (codegen_kernels) call its helpers."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.producers = graph.producers()  # var -> the node computing it
        self.namer = Namer()
        self.lines: list[str] = []
        self.depth = 1
        self.values: dict[Var, Value] = {}
        self.dims: dict[Var, tuple[str, ...]] = {}
        self.dim_by_value: dict[int, str] = {}
        self.extra: list[ArgSpec] = []
        self.packs: dict[np.dtype, list] = {}
        self.used_names: set[str] = set()
        self.kernel_count = 0
        self.output_set = set(graph.outputs)
        self.fast_imports: set[str] = set()
        self.buffers: list[Buffer] = []  # work buffers carved from the workspaces
        self.top_names: set[str] = set()  # names whose shapes the prologue may read
        self.node_index = 0
        self.direct: dict[Var, Var] = {}  # donated output -> input it is written into
        self.guard: Var | None = None  # direct writes go to the input only if it is finite
        self.deferred: set[Var] = set()  # donated outputs copied into their input at the end
        self.refs: set[Var] = set()  # donated 0-d inputs, passed as 0-d arrays
        # Extra numba.njit options kernels ask for (e.g. parallel=True for a prange loop,
        # fastmath={"reassoc"} so float reductions vectorise); rendered into the decorator.
        self.jit_options: dict[str, object] = {}
        self.threads = False  # the driver runs on Numba's thread pool (Generated.threads)

    # -- names ---------------------------------------------------------------------------
    def name(self, var: Var) -> str:
        """The Python name of an outer var: its IR name (as in `.ir()`), never a builtin."""
        text = self.namer(var)
        if keyword.iskeyword(text) or text in RESERVED:
            text += "_"
        return text

    def fresh(self, stem: str) -> str:
        """A helper name; helpers always contain "_" or a digit, which IR names never do."""
        k = 0
        while f"{stem}{k}" in self.used_names:
            k += 1
        self.used_names.add(f"{stem}{k}")
        return f"{stem}{k}"

    # -- lines ---------------------------------------------------------------------------
    def line(self, text: str, depth: int | None = None) -> None:
        self.lines.append("    " * (self.depth if depth is None else depth) + text)

    def comment_node(self, node: Node, namer: Namer | None = None, indent: str = "") -> None:
        text = format_node(node, namer or self.namer)
        note = node_comment(node)
        self.line(f"# {indent}{text}" + (f"    # {note}" if note else ""))

    # -- sizes ---------------------------------------------------------------------------
    def resolve_dim(self, size: int) -> str:
        """A literal size as an expression of the input shapes when one matches its value.

        Sizes 0 and 1 stay literal (they decide broadcasting); other sizes take the first
        input dimension of equal value, so a new batch size gives the same source text.
        """
        if size in (0, 1):
            return str(size)
        return self.dim_by_value.get(size, str(size))

    def resolve_shape(self, shape, like: tuple[Var, ...] = ()) -> tuple[str, ...]:
        """Dims for `shape`, preferring the dims of a var of exactly that shape."""
        for var in like:
            if var.shape == tuple(shape) and var in self.dims:
                return self.dims[var]
        return tuple(self.resolve_dim(d) for d in shape)

    def set_dims(self, var: Var, dims) -> None:
        self.dims[var] = tuple(dim_atom(d) for d in dims)

    # -- values --------------------------------------------------------------------------
    def read(self, var: Var, idx: list[str]) -> str:
        return self.values[var].read(idx)

    def alloc(self, var: Var, name: str | None = None, zero: bool = False,
              keep: bool = False) -> str:
        """Storage for `var`: a fresh array when it is returned, else a reused work buffer.
        A direct donated output is its input's memory; under a guard that is not finite it is
        a work buffer, holding a copy of the input when `keep` (the kernel reads the input's
        old values through the output)."""
        name = name or self.name(var)
        dims = self.dims[var]
        dtype = NUMPY_DTYPE_NAMES[var.dtype]
        owned = var in self.output_set and var not in self.deferred \
            and var not in self.direct
        if var in self.direct and name == self.name(var):  # donated: the input's memory
            in_place = f"{name} = {self.name(self.direct[var])}  # in place (donated)"
            if self.guard is None:
                self.line(in_place)
            else:  # only when the guard is finite, else a work buffer (the input keeps its
                self._work_buffer(var, name, dims)  # value; later readers read either)
                self.line(f"if np.isfinite({self.read(self.guard, [])}):")
                self.line(f"    {in_place}")
                if keep:
                    self.line("else:  # a copy to update")
                    self.depth += 1
                    self.copy(name, self.direct[var])
                    self.depth -= 1
        elif owned:
            fn = "np.zeros" if zero else "np.empty"
            self.line(f"{name} = {fn}(({', '.join(dims)}{',' if len(dims) == 1 else ''}), "
                      f"{dtype})")
        else:
            self._work_buffer(var, name, dims)
        if zero and not owned:
            self.line(f"{name}.fill(0)")
        self.values[var] = Value("array", name, "C", owned)
        return name

    def _work_buffer(self, var: Var, name: str, dims) -> None:
        """`name` = a view of the workspace (or an extra argument when its size cannot be
        computed from the inputs' shapes)."""
        if plannable(dims, self.top_names):
            buf = Buffer(len(self.buffers), var, name, np.dtype(var.dtype), tuple(var.shape),
                         tuple(dims), self.node_index)
            self.buffers.append(buf)
            self.line(f"{name} = @@ws{buf.id}@@")
        else:
            self.extra.append(ArgSpec("buffer", name, shape=var.shape, dtype=var.dtype))

    def array(self, var: Var, layouts: str = "C") -> str:
        """The name of a real array holding `var` with one of `layouts`; copies a view."""
        value = self.values[var]
        if value.kind == "array" and value.layout in layouts:
            return value.name
        if value.kind == "scalar" and var.ndim == 0:
            raise AssertionError("0-d values are scalars, never arrays")
        name = self.alloc_copy(var)  # which makes the copy var's value
        self.copy(name, var, value)
        return name

    def copy(self, name: str, var: Var, value: Value | None = None) -> None:
        """Loops copying `var` (read through `value`, by default its current one) into the
        array `name` of its shape. Loops, not `name[:] = ...`: Numba's slice assignment took
        ~1 s of compile time each."""
        value = value or self.values[var]
        idx = self.open_loops(self.dims[var])
        self.line(f"{name}[{', '.join(idx)}] = {value.read(idx)}")
        self.close_loops(len(idx))

    def alloc_copy(self, var: Var) -> str:
        return self.alloc(var, f"{self.name(var)}_c")

    # -- loops ---------------------------------------------------------------------------
    def open_loops(self, dims, start: int = 0) -> list[str]:
        idx = []
        for k, dim in enumerate(dims):
            self.line(f"for i{start + k} in range({dim}):")
            self.depth += 1
            idx.append(f"i{start + k}")
        return idx

    def close_loops(self, count: int) -> None:
        self.depth -= count

    # -- constants -----------------------------------------------------------------------
    def pack_constant(self, value: np.ndarray) -> str:
        """A 0-d constant, read from the per-dtype argument array (so not in the source)."""
        dtype = np.dtype(value.dtype)
        items = self.packs.setdefault(dtype, [])
        items.append(value.item())
        return f"consts_{DTYPES[dtype]}[{len(items) - 1}]"

    def array_constant(self, var: Var, value: np.ndarray) -> None:
        name = self.name(var)
        # C order whatever the folded value's layout (a folded transpose is Fortran order)
        self.extra.append(ArgSpec("const", name, value=np.array(value, order="C", copy=True)))
        self.top_names.add(name)  # a driver argument: the prologue may read its shape
        self.values[var] = Value("array", name, "C", owned=False)
        self.set_dims(var, [f"{name}.shape[{k}]" for k in range(value.ndim)])

    def fast_function(self, fn_name: str) -> str:
        self.fast_imports.add(fn_name)
        return fn_name


_ATOM = re.compile(r"[\w.]+(\[\d+\])?")


def dim_atom(expr: str) -> str:
    """A size expression safe to compose: `a.shape[0] + b.shape[0]` becomes `(a.shape[0] +
    b.shape[0])`, so `x * <dim>` and `<dim> // y` built from it keep their meaning."""
    expr = str(expr).strip()
    if _ATOM.fullmatch(expr) or (expr.startswith("(") and _balanced_inside(expr)):
        return expr
    return f"({expr})"


def _balanced_inside(expr: str) -> bool:
    """Whether `expr`'s opening parenthesis closes at its last character."""
    depth = 0
    for k, ch in enumerate(expr):
        depth += (ch == "(") - (ch == ")")
        if depth == 0:
            return k == len(expr) - 1
    return False


def generate(graph: Graph, donate: dict[int, int] | None = None,
             guard: int | None = None) -> Generated:
    """Generate the Numba module for `graph` (no Numba import, no compile: text only).

    `donate` maps output index -> input index whose memory receives that output (see
    compiler/codegen_buffers.py); with `guard` (the index of a 0-d output) those writes are
    made only when that output is finite: a direct write whose kernel runs after the guard
    is known goes to the input or, when the guard is not finite, to a work buffer; the
    others are deferred to the driver's end, under the guard."""
    from compiler.codegen_kernels import pooled
    from compiler.codegen_ops import EMIT_RULES

    donate = dict(donate or {})
    gen = CodeGen(graph)
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
                if i not in modes or modes[i][1] == "python"]
    names = [emit_output(gen, graph.outputs[i]) for i in returned]
    _emit_deferred(gen, graph, modes, guard)
    ranges, bases = live_ranges(graph)  # a buffer lives as long as its value's alias class
    for buf in gen.buffers:
        buf.end = max(buf.start, ranges[bases.get(buf.var, buf.var)][1])
    gen.line("")
    gen.line(f"return ({''.join(r + ', ' for r in names)})")
    plan = plan_slots(gen.buffers)
    _place_buffers(gen, plan)
    return Generated(
        source=split_driver(render_module(gen, input_names)),
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
    modes: dict[int, tuple[int, str]] = {}
    written = {graph.inputs[i] for o, i in donate.items()
               if graph.outputs[o] in gen.direct or graph.outputs[o] in gen.deferred}
    for o, i in donate.items():
        out, x = graph.outputs[o], graph.inputs[i]
        value = gen.values[out]
        if out is x:
            modes[o] = (i, "same")
        elif out in gen.direct and value.kind == "array" and value.name == gen.name(out):
            modes[o] = (i, "direct")
        elif out in gen.deferred and not (roots.get(out, frozenset()) & written):
            modes[o] = (i, "deferred")
        else:
            modes[o] = (i, "python")
    for o, (_, mode) in modes.items():
        if mode == "python" and graph.outputs[o] in gen.direct:
            raise AssertionError("a direct donation was not written in place")
    return modes


def _emit_deferred(gen: CodeGen, graph: Graph, modes: dict, guard: int | None) -> None:
    """Copy deferred donated outputs into their inputs, after every read of the inputs."""
    todo = [(graph.outputs[o], graph.inputs[i]) for o, (i, m) in modes.items()
            if m == "deferred"]
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
        gen.lines = [_substitute(line, views) if "@@ws" in line else line
                     for line in gen.lines]
        gen.lines[:0] = ["    " + line for line in prologue(plan)]
    for dtype, total in plan.totals.items():
        gen.extra.append(ArgSpec("workspace", f"ws_{DTYPES[dtype]}", shape=(total,),
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
    from runtime.cache import environment_stamp, kernel_source_hash

    packs = []
    for dtype in sorted(gen.packs, key=lambda d: DTYPES[d]):
        name = f"consts_{DTYPES[dtype]}"
        packs.append(ArgSpec("pack", name, value=np.array(gen.packs[dtype], dtype=dtype)))
    consts = [a for a in gen.extra if a.kind == "const"]
    buffers = [a for a in gen.extra if a.kind in ("buffer", "workspace")]
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
        by_module.setdefault(module or "compiler.fastmath", []).append(fn)
    # each import carries its module's source hash: the driver's machine code links it in
    head += [f"from {m} import {', '.join(fns)}  # source {kernel_source_hash(m)}"
             for m, fns in sorted(by_module.items())]
    head += [
        "",
        "",
        f"@numba.njit({jit_decorator_args(gen.jit_options)})",
        f"def driver({', '.join(params)}):",
    ]
    body = [line.rstrip() for line in gen.lines]
    while body and not body[0].strip():
        body.pop(0)
    return "\n".join(head + body) + "\n"


def jit_decorator_args(options: dict[str, object]) -> str:
    """`cache=True, error_model="numpy"` plus the options kernels asked for, sorted."""
    extra = "".join(f", {key}={value!r}" for key, value in sorted(options.items()))
    return f'cache=True, error_model="numpy"{extra}'


def _build_numba(traced_graph: Graph, lower: Callable[[], Graph], donate: dict[int, int],
                 guard: int | None):
    from runtime.executable import build_numba_indexed

    return build_numba_indexed(traced_graph, lower, donate, guard)


def _register() -> None:
    from compiler.api import BACKENDS

    BACKENDS["numba"] = _build_numba


_register()
