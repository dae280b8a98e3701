"""Codegen, memory: the driver's work buffers, and donated (in-place) outputs.

compiler/codegen/driver.py calls into this module while it builds the driver:

- Every intermediate array that is not returned (a "work buffer") is a view carved out of one
  flat workspace argument per dtype (``ws_f32``). Which buffers share a slot comes from the
  one liveness analysis and slot assignment, compiler/codegen/plan.py; here, the
  driver's side: the prologue computing each slot's offset from the input shapes (so one
  compiled artefact still serves every batch size) and the views into the workspaces. The
  executable allocates the workspaces once; a call allocates nothing but its results.
- A donated output (output i is the new value of input leaf j) is written into input j's
  memory: "direct" when the kernel producing it reads input j only elementwise at the same
  index and nothing reads input j afterwards (the optimiser update kernels), else "deferred"
  (computed into a work buffer and copied into input j at the end of the driver, after every
  read; under a finiteness guard when one is given), else "python" (returned and copied by
  the executable: 0-d leaves, values aliasing another donated input). Under a guard (a train
  step's loss), a direct kernel that runs after the guard is known writes into input j when
  the guard is finite and into a work buffer when it is not: no copy at the end.
"""

from __future__ import annotations

import re

from compiler.codegen.plan import (  # noqa: F401 (codegen.py imports them from here)
    ALIGN,
    FRESH_OPS,
    Buffer,
    BufferPlan,
    alias_bases,
    live_ranges,
    plan_slots,
)
from ir import ops
from ir.graph import Graph, Var
from ir.ops import KernelKind, Op
from ir.types import DTYPES

_SHAPE_REF = re.compile(r"([A-Za-z_][A-Za-z_0-9]*)\.shape\[")


def plannable(dims: tuple[str, ...], top_names: set[str]) -> bool:
    """A buffer can live in the workspace when its size is known at the driver's start."""
    return all(name in top_names for d in dims for name in _SHAPE_REF.findall(d))


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
    """The buffer as a view of its workspace (compiler/kernels/views.py's c_view, which the
    driver module imports when it has buffers)."""
    tag = DTYPES[buf.dtype]
    shape = ", ".join(buf.dims) + ("," if len(buf.dims) == 1 else "")
    return f"c_view(ws_{tag}, wo_{tag}_{buf.slot}, ({shape}))"


# -- donation --------------------------------------------------------------------------------
def alias_roots(graph: Graph) -> dict[Var, frozenset[Var]]:
    """For each var, the graph inputs whose memory it may share (through views)."""
    bases, inputs = alias_bases(graph), set(graph.inputs)
    every = [*graph.inputs, *(v for n in graph.nodes for v in n.outputs)]
    return {v: frozenset({bases.get(v, v)} & inputs) for v in every}


def direct_donations(graph: Graph, donate: dict[int, int],
                     guard: Var | None = None) -> dict[Var, Var]:
    """Outputs that can be written straight into their donated input's memory: out var ->
    input var. The producer must be an elementwise loop over the input's own shape reading
    the input only at the iteration index (or a gemm kernel accumulating into the input, whose
    product reads neither operand from it), and no later node or other output may read it.
    With a `guard`, only producers after the node computing it qualify (none if it is an
    input: not worth the case)."""
    roots = alias_roots(graph)
    producer = {out: k for k, node in enumerate(graph.nodes) for out in node.outputs}
    after = None if guard is None else producer.get(guard, len(graph.nodes))
    direct: dict[Var, Var] = {}
    for out_index, in_index in donate.items():
        out, x = graph.outputs[out_index], graph.inputs[in_index]
        k = producer.get(out)
        if k is None or out.ndim == 0 or out.type != x.type or roots.get(out):
            continue
        if after is not None and k <= after:
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
    if node.op is Op.GEMM:  # accumulates into x
        a, b, acc, *scale = node.inputs
        return acc is x and not any(x in roots.get(v, frozenset()) for v in (a, b, *scale))
    if node.op in ops.ELEMENTWISE:
        return all(v is x or x not in roots.get(v, frozenset()) for v in node.inputs) \
            and all(v.shape == x.shape for v in node.inputs if v is x)
    if node.op is not Op.FUSED or node.params["kind"] != KernelKind.LOOP:
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
