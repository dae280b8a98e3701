"""Costs that need a lowering: what a pass weighs its choices by when the answer depends on
later stages. compiler/pipeline.py hands them to the passes that take one, so a pass stays
`Graph -> Graph` over its own rewrite and never runs fusion or code generation itself.
"""

from __future__ import annotations

from compiler.codegen import plan_buffers
from compiler.passes.fuse import fuse_elementwise
from ir.graph import Graph


def planned_arena_bytes(graph: Graph) -> int:
    """The bytes of the work-buffer arenas `plan_buffers` gives `graph` once fused: the peak
    the generated driver holds (what `rematerialize_cheap_values` lowers).

    >>> import numpy as np
    >>> from compiler import compile
    >>> f = compile(lambda x: np.exp(x) @ np.tanh(x))
    >>> planned_arena_bytes(f.trace(np.ones((8, 8), np.float32)).graph)  # two 8x8 f32 operands
    512
    """
    return plan_buffers(fuse_elementwise(graph)).arena_bytes
