"""Build-time check that a compiled function's arrays fit in memory.

A function whose intermediate is larger than the machine's memory (an outer product of two
long vectors, a batch too large for one call) would fail at its first call with NumPy's or
Numba's MemoryError from deep inside the driver. `check_allocations` is run when an
executable is built: the traced graph's values are measured first (cheap: no passes); only if
one of them could exceed the available memory is the graph lowered and its buffer plan
(compiler/codegen/plan.py) consulted, so a value fusion keeps in registers is not
reported. The error names the array's IR node, source line and bytes, and the plan's total.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from compiler.errors import TraceError
from ir.graph import Graph, Var
from ir.printer import Namer, format_node, node_comment


class AllocationError(TraceError, MemoryError):
    """An array of the compiled function does not fit in the memory available."""


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable on Linux, else physical memory)."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def check_allocations(traced: Graph, lower: Callable[[], Graph], name: str,
                      donate: dict[int, int] | None = None, guard: int | None = None) -> None:
    """AllocationError if the arrays the compiled code allocates cannot fit in memory."""
    limit = available_memory()
    largest = max((v.type.nbytes for n in traced.nodes for v in n.outputs), default=0)
    if largest <= limit // 2:
        return
    from compiler.codegen import plan_buffers

    graph = lower()
    plan = plan_buffers(graph, donate, guard)
    returned = {v: v.type.nbytes for v in graph.outputs if v not in graph.inputs}
    needed = plan.arena_bytes + sum(returned.values())
    if needed <= limit:
        return
    sizes = {b.var: b.nbytes for b in plan.buffers}
    sizes.update(returned)
    var = max(sizes, key=sizes.get)
    raise _error(graph, var, sizes[var], needed, plan, limit, name)


def _error(graph: Graph, var: Var, nbytes: int, needed: int, plan, limit: int,
           name: str) -> AllocationError:
    node = graph.producers().get(var)
    namer = Namer()
    for v in graph.inputs:
        namer(v)
    text = format_node(node, namer) if node is not None else str(var.type)
    comment = node_comment(node) if node is not None else ""
    role = "returns" if var in graph.outputs else "keeps an intermediate"
    return AllocationError(
        f"{name} {role} {var.type} of {_human(nbytes)} ({nbytes} bytes), computed by\n"
        f"    {text}" + (f"    # {comment}" if comment else "") + "\n"
        f"  the call needs {_human(needed)} (buffer plan: {len(plan.buffers)} work buffers, "
        f"{plan.arena_bytes} bytes in arenas, plus the returned arrays), more than the "
        f"{_human(limit)} of memory available",
        source=node.source if node is not None else None,
        fix="process the data in smaller batches, or restructure the computation so the "
        "large array is not materialised (reduce it where it is made, e.g. np.sum of an outer "
        "product is fused and never stored)")
