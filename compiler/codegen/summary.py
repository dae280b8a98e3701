"""`kernel_summary`: one line per kernel of a fused graph, what it iterates over and how many
bytes it moves. `Compiled.summary(*args)` shows it for the "fused" stage.

Bytes are the sizes of the arrays a kernel reads plus those it writes, the memory traffic if
every array is touched once (broadcast inputs count at their small size, since the loop reads
them in place). Constants are not kernels and are left out; movement ops are listed, marked
as views where codegen can make them without a copy. Below the table, the driver's work-buffer
plan (compiler/codegen/plan.py): how many buffers, the arena bytes they share, what they
would take without reuse, and each buffer's elements, slot and live range (kernel rows; "out"
for the driver's end, where returned values are copied out).
"""

from __future__ import annotations

from compiler.codegen.driver import plan_buffers
from compiler.codegen.plan import BufferPlan
from ir.graph import Graph, Node
from ir.ops import Op
from ir.printer import Namer

VIEW_OPS = frozenset({Op.RESHAPE, Op.BROADCAST_TO, Op.TRANSPOSE})
ABSORBED_IN_BODIES = frozenset({Op.CONSTANT, Op.BROADCAST_TO})


def kernel_bytes(node: Node) -> int:
    """Bytes read plus bytes written by one node."""
    return sum(v.type.nbytes for v in (*node.inputs, *node.outputs))


def kernel_ops(node: Node) -> int:
    """Computations in a kernel: body ops except the constants and broadcasts it absorbed."""
    if node.op != Op.FUSED:
        return 1
    return sum(n.op not in ABSORBED_IN_BODIES for n in node.params["body"].nodes)


def _describe(node: Node) -> tuple[str, str]:
    if node.op == Op.FUSED:
        return node.params["kind"], str(node.params["shape"])
    kind = f"{node.op.value} (view)" if node.op in VIEW_OPS else node.op.value
    if node.op in (Op.MATMUL, Op.GEMM):  # iterations: the output's elements times the inner k
        # (a gemm is a matmul accumulating into x)
        return kind, f"{node.out.shape} k={node.inputs[0].shape[-1]}"
    return kind, str(node.outputs[0].shape)


def kernel_summary(graph: Graph, plan: BufferPlan | None = None) -> str:
    """A table: kernel number, kind, iteration shape, ops, bytes read+written, source line;
    then `plan` (by default `plan_buffers(graph)`, the driver's plan without donation).

    >>> import numpy as np
    >>> from compiler import compile
    >>> from compiler.pipeline import lower
    >>> f = compile(lambda x, w: np.tanh(x @ w).sum())
    >>> graph = lower(f.trace(np.ones((2, 3), "f4"), np.ones((3, 4), "f4")).graph)
    >>> print(kernel_summary(graph))  # doctest: +ELLIPSIS
    #  kind    shape       ops  bytes  source
    0  matmul  (2, 4) k=3    1    104  <doctest ...>:1
    1  reduce  (2, 4)        2     36  <doctest ...>:1
    2 kernels, 3 ops, 140 bytes moved
    buffer plan: 1 buffers in 1 slots, 64 bytes in arenas (without reuse 64, peak live 32)
    arenas: float32 16 elements
      c:f32[2,4]  float32[0:8]  slot 0  kernels 0..1
    """
    rows = []
    for node in graph.nodes:
        if node.op == Op.CONSTANT:
            continue
        kind, shape = _describe(node)
        rows.append((kind, shape, kernel_ops(node), kernel_bytes(node), str(node.source or "")))
    header = ("kind", "shape", "ops", "bytes")
    widths = [max([len(header[c])] + [len(str(r[c])) for r in rows]) for c in range(4)]
    number_width = max(1, len(str(len(rows) - 1)))
    lines = [" " * (number_width - 1) + "#  " + "  ".join(
        h.ljust(w) if c < 2 else h.rjust(w) for c, (h, w) in enumerate(zip(header, widths))
    ) + "  source"]
    for k, row in enumerate(rows):
        cells = [
            str(row[c]).ljust(widths[c]) if c < 2 else str(row[c]).rjust(widths[c])
            for c in range(4)
        ]
        lines.append(f"{str(k).rjust(number_width)}  {'  '.join(cells)}  {row[4]}".rstrip())
    ops = sum(r[2] for r in rows)
    moved = sum(r[3] for r in rows)
    lines.append(f"{len(rows)} kernels, {ops} ops, {moved} bytes moved")
    lines.append(buffer_plan_text(graph, plan))
    return "\n".join(lines)


def buffer_plan_text(graph: Graph, plan: BufferPlan | None = None) -> str:
    """The plan's totals, then one line per buffer: value (named as in the printout), its
    elements of the workspace, slot, live range as rows of the kernel table."""
    plan = plan or plan_buffers(graph)
    names = _value_names(graph)
    rows = [i for i, node in enumerate(graph.nodes) if node.op != Op.CONSTANT]
    row_of = {i: str(k) for k, i in enumerate(rows)}
    row_of[len(graph.nodes)] = "out"
    return plan.describe(lambda var: names.get(var, "?"), row_of.__getitem__)


def _value_names(graph: Graph) -> dict:
    """The printer's names: its Namer, fed inputs then node outputs in the printed order."""
    namer = Namer()
    for var in [*graph.inputs, *(v for n in graph.nodes for v in n.outputs)]:
        namer(var)
    return namer.names
