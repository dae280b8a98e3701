"""Codegen, memory: work buffers planned from liveness, and donated (in-place) outputs.

compiler/codegen.py calls into this module while it builds the driver:

- Every intermediate array that is not returned (a "work buffer") is a view carved out of one
  flat workspace argument per dtype (``ws_f32``). Buffers whose live ranges (first node
  writing them .. last node reading them or any alias of them) do not overlap share a SLOT;
  a slot's size is the max of its members' sizes, computed in the driver's prologue from the
  input shapes, so one compiled artefact still serves every batch size. The executable
  allocates the workspaces once; a call allocates nothing but its results.
- A donated output (output i is the new value of input leaf j) is written into input j's
  memory: "direct" when the kernel producing it reads input j only elementwise at the same
  index and nothing reads input j afterwards (the optimiser update kernels), else "deferred"
  (computed into a work buffer and copied into input j at the end of the driver, after every
  read; under a finiteness guard when one is given), else "python" (returned and copied by
  the executable: 0-d leaves, values aliasing another donated input).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ir import ops
from ir.graph import Graph, Var
from ir.ops import Op
from ir.types import DTYPES

ALIGN = 16  # slot sizes are rounded up to this many elements (64 bytes of f32)
# Ops whose outputs are fresh storage in codegen; any other op may alias its inputs.
FRESH_OPS = (ops.ELEMENTWISE | ops.REDUCTION | ops.INDEXING | ops.CONTRACTION
             | {Op.FUSED, Op.CONSTANT, Op.RANDOM_UNIFORM, Op.CONCATENATE, Op.PAD}) \
    - {Op.STOP_GRADIENT, Op.CAST}
_SHAPE_REF = re.compile(r"([A-Za-z_][A-Za-z_0-9]*)\.shape\[")


@dataclass
class Buffer:
    """One work buffer: `name` in the driver, a view of `ws_<dtype>` at its slot's offset."""

    id: int
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    start: int  # index of the node that allocates it
    end: int = -1  # last node index that uses it (len(nodes): read by the epilogue)
    slot: int = -1

    @property
    def size_expr(self) -> str:
        return " * ".join(f"({d})" if not d.isdigit() else d for d in self.dims) or "1"

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass
class BufferPlan:
    """Slots per dtype; what `Compiled.summary` and the driver's prologue comment show."""

    buffers: list[Buffer] = field(default_factory=list)
    slots: dict[np.dtype, list[list[Buffer]]] = field(default_factory=dict)
    totals: dict[np.dtype, int] = field(default_factory=dict)  # elements, concrete shapes

    def describe(self) -> str:
        if not self.buffers:
            return "work buffers: none"
        lines = []
        for dtype, slots in self.slots.items():
            members = [b for s in slots for b in s]
            unshared = sum(b.nbytes for b in members)
            total = self.totals[dtype] * dtype.itemsize
            lines.append(f"work buffers {DTYPES[dtype]}: {len(members)} buffers in {len(slots)} "
                         f"slots, {_kb(total)} (unshared {_kb(unshared)}, "
                         f"peak live {_kb(self.peak(dtype))})")
            for k, slot in enumerate(slots):
                names = ", ".join(f"{b.name}{list(b.shape)}@{b.start}-{b.end}" for b in slot)
                lines.append(f"  slot {k}: {names}")
        return "\n".join(lines)

    def peak(self, dtype: np.dtype) -> int:
        members = [b for s in self.slots.get(dtype, []) for b in s]
        points = {b.start for b in members}
        return max((sum(b.nbytes for b in members if b.start <= t <= b.end) for t in points),
                   default=0)


def _kb(nbytes: int) -> str:
    return f"{nbytes / 1024:.1f} KB"


def plannable(dims: tuple[str, ...], top_names: set[str]) -> bool:
    """A buffer can live in the workspace when its size is known at the driver's start."""
    return all(name in top_names for d in dims for name in _SHAPE_REF.findall(d))


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
        for k, slot in enumerate(slots):
            for buf in slot:
                buf.slot = k
        plan.totals[dtype] = sum(_round(max(int(np.prod(b.shape)) for b in s)) for s in slots)
    return plan


def _round(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def prologue(plan: BufferPlan) -> list[str]:
    """Driver lines computing each slot's offset from the input shapes, with a size guard."""
    lines = [f"# {line}" for line in plan.describe().splitlines()]
    for dtype, slots in plan.slots.items():
        tag = DTYPES[dtype]
        offset = "0"
        for k, slot in enumerate(slots):
            lines.append(f"wo_{tag}_{k} = {offset}")
            sizes = sorted({b.size_expr for b in slot})
            size = sizes[0] if len(sizes) == 1 else f"max({', '.join(sizes)})"
            offset = f"wo_{tag}_{k} + ({size} + {ALIGN - 1}) // {ALIGN} * {ALIGN}"
        lines.append(f"if ws_{tag}.shape[0] < {offset}:")
        lines.append(f'    raise ValueError("chainjit: the {tag} workspace is too small")')
    return lines


def view_expr(buf: Buffer) -> str:
    tag = DTYPES[buf.dtype]
    off = f"wo_{tag}_{buf.slot}"
    shape = ", ".join(buf.dims) + ("," if len(buf.dims) == 1 else "")
    return f"ws_{tag}[{off}:{off} + {buf.size_expr}].reshape(({shape}))"


# -- donation --------------------------------------------------------------------------------
def alias_roots(graph: Graph) -> dict[Var, frozenset[Var]]:
    """For each var, the graph inputs whose memory it may share (through movement ops)."""
    roots: dict[Var, frozenset[Var]] = {v: frozenset([v]) for v in graph.inputs}
    for node in graph.nodes:
        if node.op in FRESH_OPS:
            for out in node.outputs:
                roots[out] = frozenset()
        else:
            shared = frozenset().union(*(roots.get(v, frozenset()) for v in node.inputs))
            for out in node.outputs:
                roots[out] = shared
    return roots


def direct_donations(graph: Graph, donate: dict[int, int]) -> dict[Var, Var]:
    """Outputs that can be written straight into their donated input's memory: out var ->
    input var. The producer must be an elementwise loop over the input's own shape reading
    the input only at the iteration index, and no later node or other output may read it."""
    roots = alias_roots(graph)
    producer = {out: k for k, node in enumerate(graph.nodes) for out in node.outputs}
    direct: dict[Var, Var] = {}
    for out_index, in_index in donate.items():
        out, x = graph.outputs[out_index], graph.inputs[in_index]
        k = producer.get(out)
        if k is None or out.ndim == 0 or out.type != x.type or roots.get(out):
            continue
        node = graph.nodes[k]
        if not _reads_at_index(node, x, roots):
            continue
        later = [v for n in graph.nodes[k + 1:] for v in n.inputs]
        others = [v for i, v in enumerate(graph.outputs) if i != out_index]
        if any(x in roots.get(v, frozenset()) for v in later + others):
            continue
        if sum(1 for v in graph.outputs if v is out) > 1:
            continue
        direct[out] = x
    return direct


def _reads_at_index(node, x: Var, roots) -> bool:
    if node.op in ops.ELEMENTWISE:
        return all(v is x or x not in roots.get(v, frozenset()) for v in node.inputs) \
            and all(v.shape == x.shape for v in node.inputs if v is x)
    if node.op is not Op.FUSED or node.params.get("kind") != "loop":
        return False
    if tuple(node.params["shape"]) != x.shape:
        return False
    body = node.params["body"]
    consumers = body.consumers()
    for v, inner in zip(node.inputs, body.inputs):
        if v is x:
            if inner in body.outputs:
                return False
            if any(n.op not in ops.ELEMENTWISE for n in consumers.get(inner, [])):
                return False
        elif x in roots.get(v, frozenset()):
            return False
    return True
