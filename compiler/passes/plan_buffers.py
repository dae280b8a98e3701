"""Buffer planning: where every intermediate array of a fused graph lives, in one arena per
dtype, so that values alive at the same time never share memory and dead values' memory is
reused.

Runs on the "fused" stage (it is an analysis, not a rewrite: `plan_buffers(graph)` gives a
`BufferPlan`, the graph is unchanged). Codegen (compiler/codegen.py) may carve its work buffers
out of the arenas; `kernel_summary` prints the plan. The published fields:

    plan.buffers[var] = Buffer(var, dtype, offset, size, start, end)
    plan.slots[var]   = (dtype, offset_elements, size_elements)   # the same, as a tuple
    plan.arena_elements[dtype] = elements the arena of that dtype needs
    plan.views[view_var] = base_var                               # aliases, no memory

Which values get a buffer: every value a node produces, except graph inputs, values returned
to the user (they must be fresh arrays the user keeps), CONSTANTs (driver arguments), 0-d values
(scalars in the driver) and views. A view (RESHAPE, TRANSPOSE, BROADCAST_TO, STOP_GRADIENT) aliases
its base: it has no memory of its own, and each read of it is a read of the base, which extends
the base's live range. A base with a view that is returned escapes, so it gets no buffer either.

Live ranges are node indices, inclusive: `start` is the node writing the value, `end` the last
node reading it or any view of it. Two buffers conflict when their ranges intersect (a kernel
never writes an output over an input it is still reading). Offsets are assigned greedily, by
size descending, best fit among the gaps left by conflicting buffers already placed (as TFLite's
greedy-by-size planner); offsets and sizes are rounded up to `ALIGN_BYTES`. Sizes are static,
from the traced shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ir.graph import Graph, Var
from ir.ops import Op

VIEW_OPS = frozenset({Op.RESHAPE, Op.TRANSPOSE, Op.BROADCAST_TO, Op.STOP_GRADIENT})
ALIGN_BYTES = 64  # a cache line; every offset is a multiple of it


@dataclass(frozen=True)
class Buffer:
    """One planned array: `size` elements at `offset` elements into the `dtype` arena, live
    from node `start` to node `end` (inclusive)."""

    var: Var
    dtype: np.dtype
    offset: int
    size: int
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


@dataclass
class BufferPlan:
    buffers: dict[Var, Buffer] = field(default_factory=dict)
    arena_elements: dict[np.dtype, int] = field(default_factory=dict)
    views: dict[Var, Var] = field(default_factory=dict)
    # the largest sum of buffer sizes alive at one node: no plan can use less memory
    peak_live_bytes: int = 0

    @property
    def slots(self) -> dict[Var, tuple[np.dtype, int, int]]:
        return {v: (b.dtype, b.offset, b.size) for v, b in self.buffers.items()}

    @property
    def arena_bytes(self) -> int:
        """Memory the plan uses: the sum of the arenas (the plan's peak)."""
        return sum(n * np.dtype(d).itemsize for d, n in self.arena_elements.items())

    @property
    def unshared_bytes(self) -> int:
        """Memory without reuse: every buffer on its own."""
        return sum(b.nbytes for b in self.buffers.values())

    def describe(self) -> str:
        """Two lines: the totals, then the arenas."""
        arenas = ", ".join(f"{np.dtype(d).name} {n} elements"
                           for d, n in sorted(self.arena_elements.items(), key=str))
        return (f"buffer plan: {len(self.buffers)} buffers, {self.arena_bytes} bytes in arenas"
                f" (without reuse {self.unshared_bytes}, peak live {self.peak_live_bytes})\n"
                f"arenas: {arenas or 'none'}")


def _aligned(elements: int, dtype: np.dtype) -> int:
    unit = max(1, ALIGN_BYTES // dtype.itemsize)
    return -(-elements // unit) * unit


def live_ranges(graph: Graph) -> tuple[dict[Var, tuple[int, int]], dict[Var, Var], set[Var]]:
    """(var -> (start, end)) for every value a node produces, the view -> base map, and the
    bases that escape (returned directly or through a view)."""
    views: dict[Var, Var] = {}
    ranges: dict[Var, list[int]] = {}
    for t, node in enumerate(graph.nodes):
        for var in node.inputs:
            base = views.get(var, var)
            if base in ranges:
                ranges[base][1] = t
        if node.op in VIEW_OPS:
            (source,) = node.inputs
            views[node.out] = views.get(source, source)
            continue
        for out in node.outputs:
            ranges[out] = [t, t]
    escaping = {views.get(v, v) for v in graph.outputs}
    return {v: (s, e) for v, (s, e) in ranges.items()}, views, escaping


def _place(size: int, placed: list[tuple[int, int]]) -> int:
    """Best fit: the smallest gap between `placed` (offset, size) blocks that holds `size`,
    else the top."""
    best, best_gap, cursor = None, None, 0
    for offset, length in sorted(placed):
        gap = offset - cursor
        if gap >= size and (best_gap is None or gap < best_gap):
            best, best_gap = cursor, gap
        cursor = max(cursor, offset + length)
    return cursor if best is None else best


def plan_buffers(graph: Graph) -> BufferPlan:
    """Plan the arenas of a fused graph (see the module docstring).

    >>> import numpy as np
    >>> from compiler import compile
    >>> from compiler.pipeline import lower
    >>> f = compile(lambda x, w: np.tanh(x @ w) @ w.T)
    >>> g = lower(f.trace(np.ones((8, 8), "f4"), np.ones((8, 8), "f4")).graph)
    >>> plan = plan_buffers(g)
    >>> [(b.offset, b.size, b.start, b.end) for b in plan.buffers.values()]
    [(0, 64, 0, 1), (64, 64, 1, 3)]
    """
    ranges, views, escaping = live_ranges(graph)
    producers = graph.producers()
    planned = [
        v for v in ranges
        if v not in escaping and v.ndim > 0 and producers[v].op != Op.CONSTANT
    ]
    plan = BufferPlan(views=views)
    by_dtype: dict[np.dtype, list[Buffer]] = {}
    for var in sorted(planned, key=lambda v: (-v.type.size * v.dtype.itemsize, ranges[v])):
        dtype = np.dtype(var.dtype)
        size = _aligned(var.type.size, dtype)
        start, end = ranges[var]
        placed = by_dtype.setdefault(dtype, [])
        conflicts = [(b.offset, b.size) for b in placed if b.start <= end and start <= b.end]
        buffer = Buffer(var, dtype, _place(size, conflicts), size, start, end)
        placed.append(buffer)
        plan.arena_elements[dtype] = max(plan.arena_elements.get(dtype, 0),
                                         buffer.offset + size)
    order = {v: i for i, v in enumerate(ranges)}
    for buffer in sorted((b for bs in by_dtype.values() for b in bs), key=lambda b: order[b.var]):
        plan.buffers[buffer.var] = buffer
    live = [0] * (len(graph.nodes) + 1)
    for b in plan.buffers.values():
        for t in range(b.start, b.end + 1):
            live[t] += b.nbytes
    plan.peak_live_bytes = max(live)
    return plan
