"""Buffer planning: where every intermediate array of a fused graph lives. ONE liveness analysis
and ONE slot assignment, used by codegen (compiler/codegen/buffers.py) to build the driver's
work-buffer plan; `compiler.codegen.plan_buffers(graph)` is that same plan, what
`kernel_summary` prints and the rematerialisation pass measures.

Liveness (`live_ranges`): values of ops outside `FRESH_OPS` (reshape, transpose, broadcast,
slice, stop_gradient, cast) may alias their input, so a value and its views form one class
named by its base; the class is live from the node writing the base to the last node reading
the base or any view of it (`len(graph.nodes)` when it is returned: the driver's epilogue
copies it out). Ranges are node indices, inclusive.

Slots (`plan_slots`): codegen makes a `Buffer` for every array it allocates that is not a fresh
result (named and sized as in the driver: `dims` are expressions of the input shapes); its
range is its class's, from the node that allocates it. Buffers of one dtype whose ranges do
not intersect share a SLOT (greedy interval colouring, preferring the slot closest in size); a
slot's size is its largest member's, rounded up to `ALIGN` elements, and the slots are laid
end to end in one workspace per dtype. Sizes are symbolic in the driver's prologue (so one
compiled artefact serves every batch size) and concrete here, from the traced shapes.

    plan.buffers                 list of Buffer(var, name, dtype, shape, dims, start, end, slot,
                                 offset = elements into the workspace for the traced shapes)
    plan.slots[dtype]            list of slots, each the list of its buffers
    plan.totals[dtype]           workspace elements for the traced shapes
    plan.arena_bytes, unshared_bytes, peak_live_bytes
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ir import ops
from ir.graph import Graph, Var
from ir.ops import Op
from ir.types import TensorType

ALIGN = 16  # slot sizes are rounded up to this many elements (64 bytes of f32)
# Ops whose outputs are fresh storage in codegen; any other op may alias its input.
FRESH_OPS = (ops.ELEMENTWISE | ops.REDUCTION | ops.INDEXING | ops.CONTRACTION
             | ops.LIBRARY | {Op.FUSED, Op.CONSTANT, Op.RANDOM_UNIFORM, Op.CONCATENATE, Op.PAD}) \
    - {Op.STOP_GRADIENT, Op.CAST}


def alias_bases(graph: Graph) -> dict[Var, Var]:
    """view -> the value (or graph input) whose memory it may share, for every value of a
    node outside FRESH_OPS (all of them take one array)."""
    bases: dict[Var, Var] = {}
    for node in graph.nodes:
        if node.op not in FRESH_OPS and node.inputs:
            base = bases.get(node.inputs[0], node.inputs[0])
            for out in node.outputs:
                bases[out] = base
    return bases


def live_ranges(graph: Graph) -> tuple[dict[Var, tuple[int, int]], dict[Var, Var]]:
    """(base -> (first node writing it, last node reading it or a view of it)) for every
    graph input (from 0) and value a fresh op writes, and the view -> base map. Returned
    classes end at len(nodes)."""
    bases = alias_bases(graph)
    ranges: dict[Var, list[int]] = {v: [0, 0] for v in graph.inputs}
    for t, node in enumerate(graph.nodes):
        for var in node.inputs:
            base = bases.get(var, var)
            if base in ranges:
                ranges[base][1] = t
        if node.op in FRESH_OPS:
            for out in node.outputs:
                ranges[out] = [t, t]
    for var in graph.outputs:
        base = bases.get(var, var)
        if base in ranges:
            ranges[base][1] = len(graph.nodes)
    return {v: (s, e) for v, (s, e) in ranges.items()}, bases


@dataclass
class Buffer:
    """One work buffer: `name` in the driver, a view of `ws_<dtype>` at its slot's offset."""

    id: int
    var: Var  # the value it holds (or a C-contiguous copy of, for a view)
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    start: int  # index of the node that allocates it
    end: int = -1  # last node index that uses it (len(nodes): read by the epilogue)
    slot: int = -1
    offset: int = 0  # elements into the workspace, for the traced shapes

    @property
    def size_expr(self) -> str:
        return " * ".join(f"({d})" if not d.isdigit() else d for d in self.dims) or "1"

    @property
    def type(self) -> TensorType:
        return TensorType(self.shape, self.dtype)

    @property
    def size(self) -> int:
        return self.type.size

    @property
    def nbytes(self) -> int:
        return self.type.nbytes


@dataclass
class BufferPlan:
    """Slots per dtype: what the driver's prologue lays out and `Compiled.summary` shows."""

    buffers: list[Buffer] = field(default_factory=list)
    slots: dict[np.dtype, list[list[Buffer]]] = field(default_factory=dict)
    totals: dict[np.dtype, int] = field(default_factory=dict)  # elements, traced shapes

    @property
    def arena_bytes(self) -> int:
        """Memory the workspaces take for the traced shapes."""
        return sum(n * d.itemsize for d, n in self.totals.items())

    @property
    def unshared_bytes(self) -> int:
        """Memory without reuse: every buffer in a slot of its own (aligned like any slot)."""
        return sum(aligned(b.size) * b.dtype.itemsize for b in self.buffers)

    @property
    def peak_live_bytes(self) -> int:
        """The largest sum of buffer sizes alive at one node: no plan can use less."""
        return max((sum(b.nbytes for b in self.buffers if b.start <= t <= b.end)
                    for t in {b.start for b in self.buffers}), default=0)

    def describe(self, names: Callable[[Var], str] | None = None,
                 at: Callable[[int], str] = str) -> str:
        """The totals, the workspaces, then one line per buffer: name and type, elements of
        its workspace, live range (node indices shown by `at`)."""
        arenas = ", ".join(f"{d.name} {n} elements" for d, n in self.totals.items())
        head = (f"buffer plan: {len(self.buffers)} buffers in "
                f"{sum(map(len, self.slots.values()))} slots, {self.arena_bytes} bytes in "
                f"arenas (without reuse {self.unshared_bytes}, peak live "
                f"{self.peak_live_bytes})")
        lines = [head, f"arenas: {arenas or 'none'}"]
        for dtype, slots in self.slots.items():
            for k, slot in enumerate(slots):
                for b in slot:
                    name = names(b.var) + (" copy" if b.name.endswith("_c") else "") \
                        if names else b.name
                    lines.append(f"  {name}:{b.var.type}  {dtype.name}[{b.offset}:"
                                 f"{b.offset + b.size}]  slot {k}  kernels "
                                 f"{at(b.start)}..{at(b.end)}")
        return "\n".join(lines)


def plan_slots(buffers: list[Buffer]) -> BufferPlan:
    """Greedy interval colouring per dtype: a buffer joins a slot whose members all ended
    before it starts, preferring the slot closest in size (so little memory is wasted)."""
    plan = BufferPlan(buffers=list(buffers))
    for buf in sorted(buffers, key=lambda b: (b.start, -b.nbytes)):
        slots = plan.slots.setdefault(buf.dtype, [])
        free = [s for s in slots if max(b.end for b in s) < buf.start]
        if free:
            best = min(free, key=lambda s: abs(max(b.nbytes for b in s) - buf.nbytes))
            best.append(buf)
        else:
            slots.append([buf])
    for dtype, slots in plan.slots.items():
        offset = 0
        for k, slot in enumerate(slots):
            for buf in slot:
                buf.slot, buf.offset = k, offset
            offset += aligned(max(b.size for b in slot))
        plan.totals[dtype] = offset
    return plan


def aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN
