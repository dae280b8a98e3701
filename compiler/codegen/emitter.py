"""Codegen's emitter state: how generated code reads each IR value, and the helpers per-op
emitters call (names, lines, sizes, buffers, loops, constants).

`CodeGen` is the state of one driver being written; compiler/codegen/driver.py walks the graph
and calls the per-op emitters (compiler/codegen/loops.py, ops.py, conv.py) with it.
"""

from __future__ import annotations

import builtins
import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from compiler.codegen.buffers import Buffer, BufferPlan, plannable
from ir.graph import Graph, Node, Var
from ir.printer import Namer, format_node, node_comment
from ir.types import DTYPES
from runtime.execution.specs import ArgKind, DonationMode

VIEWS = "compiler.kernels.views"  # c_view: a C array over another's memory
# Names the generated module uses itself: IR names equal to these get a trailing "_".
RESERVED = frozenset({"np", "numba", "math", "driver"}) | frozenset(dir(builtins))
NUMPY_DTYPE_NAMES = {
    np.dtype(np.float32): "np.float32",
    np.dtype(np.float64): "np.float64",
    np.dtype(np.int32): "np.int32",
    np.dtype(np.int64): "np.int64",
    np.dtype(np.bool_): "np.bool_",
}


class ValueKind(str, Enum):
    """How generated code holds a value (`Value.kind`); a str Enum, equal to its string."""

    ARRAY = "array"  # a real Numba array `name` (layout "C", "F" or "A")
    SCALAR = "scalar"  # a local
    VIEW = "view"  # element idx is base.read(index_map(idx)): broadcast, slice, transpose

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value


@dataclass
class Value:
    """How generated code reads one IR var.

    kind "array": a real Numba array `name` (layout "C", "F" or "A"); "scalar": a local;
    "view": element `idx` is `base.read(index_map(idx))` (broadcast, slice, transpose).
    `owned`: the array was allocated by this call (safe to return to the user). A kind given
    as a string becomes its `ValueKind` (an unknown one raises).
    """

    kind: ValueKind
    name: str
    layout: str = "C"
    owned: bool = False
    base: Value | None = None
    index_map: Callable[[list[str]], list[str]] | None = None

    def __post_init__(self) -> None:
        self.kind = ValueKind(self.kind)

    def read(self, idx: list[str]) -> str:
        if self.kind == "scalar":
            return self.name
        if self.kind == "view":
            return self.base.read(self.index_map(idx))
        return f"{self.name}[{', '.join(idx)}]" if idx else f"{self.name}[()]"


@dataclass
class ArgSpec:
    """One driver argument after the graph inputs: where the executable gets it."""

    kind: ArgKind  # const, pack, workspace or buffer (runtime/execution/specs.py says what each is)
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
    # donated output index -> (input index, mode): SAME (the input itself), DIRECT (written
    # in place by its kernel), DEFERRED (copied in at the driver's end), PYTHON
    donation: dict[int, tuple[int, DonationMode]] = field(default_factory=dict)
    plan: BufferPlan | None = None
    guard: int | None = None  # donated writes only when this 0-d output is finite
    refs: list[int] = field(default_factory=list)  # 0-d inputs passed as 0-d arrays
    # the driver runs its work on Numba's threads (convolutions, matmuls, large loop kernels;
    # loops.pooled): BLAS is held to one thread while it runs (runtime/execution/blas.py)
    threads: bool = False
    # kernel module name -> its text (compiler/codegen/outline.py); loaded before the driver
    kernels: dict[str, str] = field(default_factory=dict)

    def listing(self) -> str:
        """What runs: the driver module, then each kernel module it calls (under a line naming
        the caller the driver calls it by, `kern_<hash>`)."""
        parts = [self.source]
        for name, text in sorted(self.kernels.items()):
            caller = "kern_" + name.removeprefix("chainjit_k_")[:10]
            parts.append(f"# ---- kernel module {name}: the driver's {caller} ----\n{text}")
        return "\n\n".join(parts)


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
        self.emit_rules: dict = {}  # op -> emitter (ops.EMIT_RULES; loop bodies use it)

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
        input dimension of equal value, else the first product of two (a flattened batch x
        classes: `z[np.arange(n), y]`'s gather), so a new batch size gives the same source
        text. (An expression found by coincidence is still right: the text is made for one
        trace's shapes, and code is reused only by a trace that generated the same text.)
        """
        if size in (0, 1):
            return str(size)
        if size in self.dim_by_value:
            return self.dim_by_value[size]
        dims = [(v, e) for v, e in self.dim_by_value.items() if v > 1]
        for k, (v1, e1) in enumerate(dims):
            for v2, e2 in dims[k:]:
                if v1 * v2 == size:
                    return f"({e1} * {e2})"
        return str(size)

    def resolve_shape(self, shape, like: tuple[Var, ...] = ()) -> tuple[str, ...]:
        """Dims for `shape`, preferring the dims of a var of exactly that shape."""
        for var in like:
            if var.shape == tuple(shape) and var in self.dims:
                return self.dims[var]
        return tuple(self.resolve_dim(d) for d in shape)

    def set_dims(self, var: Var, dims) -> None:
        """Record `var`'s sizes as expressions; a compound one (`a.shape[1] + 2`, a pad's or a
        concatenation's) in parentheses, since sizes are combined as text (a flattened loop's
        `n0 * n1`: without them a pad's flat size was `n0 * a.shape[1] + 2`)."""
        self.dims[var] = tuple(_grouped(d) for d in dims)

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
            in_place = f"{name} = {self.values[self.direct[var]].name}  # in place (donated)"
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
            self.extra.append(ArgSpec(ArgKind.BUFFER, name, shape=var.shape, dtype=var.dtype))

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
        self.extra.append(ArgSpec(ArgKind.CONST, name, value=np.array(value, order="C", copy=True)))
        self.top_names.add(name)  # a driver argument: the prologue may read its shape
        self.values[var] = Value("array", name, "C", owned=False)
        self.set_dims(var, [f"{name}.shape[{k}]" for k in range(value.ndim)])

    def c_reshape(self, name: str, dims, offset: str = "0") -> str:
        """The expression of a C array of shape `dims` over the C array `name`'s elements from
        `offset` on (compiler/kernels/views.py: no reshape routine to compile)."""
        self.fast_imports.add(f"{VIEWS}:c_view")
        dims = list(dims)
        return f"c_view({name}, {offset}, ({', '.join(dims)}{',' if len(dims) == 1 else ''}))"

    def fast_function(self, fn_name: str) -> str:
        self.fast_imports.add(fn_name)
        return fn_name


_ATOM = re.compile(r"[A-Za-z_][A-Za-z_0-9]*(\.shape\[\d+\])?|\d+")


def _grouped(dim: str) -> str:
    """`dim` as one operand: an atom as it is, anything else in parentheses (kept when they
    already enclose the whole expression)."""
    dim = str(dim)
    if _ATOM.fullmatch(dim) or _enclosed(dim):
        return dim
    return f"({dim})"


def _enclosed(text: str) -> bool:
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depth = 0
    for k, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and k < len(text) - 1:
            return False
    return True
