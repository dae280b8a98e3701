"""`Compiled.compare(*args)`: the compiled code against the reference interpreter, node by node.

The design, chosen so that codegen needs no hooks: the fused graph is compiled once more
with every node's outputs made graph outputs (the "instrumented" graph: the same kernels,
each value also returned), and run on the arguments; the interpreter evaluates the same
fused graph node by node. Walking the nodes in order, the first whose compiled output differs
from the interpreter's beyond the tolerance is reported: its kernel (its position among the
fused graph's nodes, as `.summary` numbers them), the IR node inside the kernel that
computes the differing value, and that node's source line, with both values' statistics.
Nodes before it agree, so the difference starts there. A value returned from the driver is
copied out of its kernel, so the instrumented build costs one extra Numba compile and
computes exactly what the ordinary build computes.

>>> import numpy as np
>>> from compiler import compile
>>> f = compile(lambda x: np.sum(np.tanh(x) * 2.0), backend="interpreter")
>>> print(f.compare(np.zeros(3)))            # doctest: +ELLIPSIS
compare: all ... values agree ...
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ir.graph import Graph, Node, Var
from ir.interpreter import eval_node
from ir.ops import Op
from ir.printer import Namer, format_node, node_comment

RTOL = {np.dtype(np.float16): 1e-2, np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-9}


@dataclass
class Difference:
    """The first value the compiled code computes differently from the interpreter."""

    kernel: int  # index of the node in the fused graph
    node: Node  # the fused graph's node (a FUSED kernel or a single op)
    inner: Node | None  # the body node computing the value, for a FUSED kernel
    var: Var
    compiled: np.ndarray
    reference: np.ndarray
    error: float
    tolerance: float
    text: str  # the IR line of the node that computes the value

    @property
    def source(self):
        return (self.inner or self.node).source


@dataclass
class Comparison:
    """What `Compiled.compare` found: `difference` is None when every value agrees."""

    checked: int
    difference: Difference | None
    backend: str

    @property
    def ok(self) -> bool:
        return self.difference is None

    def __str__(self) -> str:
        if self.difference is None:
            return (f"compare: all {self.checked} values agree between the {self.backend} "
                    "build and the interpreter")
        d = self.difference
        kind = d.node.params.get("kind", "") if d.node.op is Op.FUSED else d.node.op.value
        lines = [
            f"compare: kernel {d.kernel} ({kind}) is the first to differ from the interpreter",
            f"  IR node: {d.text}",
            f"  source:  {d.source if d.source is not None else '(unknown)'}",
            f"  value:   {d.var.type}, max abs error {d.error:.3g} (tolerance {d.tolerance:.3g})",
            f"  compiled:    {_stats(d.compiled)}",
            f"  interpreter: {_stats(d.reference)}",
        ]
        return "\n".join(lines)

    __repr__ = __str__


def _stats(value: np.ndarray) -> str:
    value = np.asarray(value)
    if value.size == 0:
        return "empty"
    as_float = value.astype(np.float64)
    finite = as_float[np.isfinite(as_float)]
    nonfinite = value.size - finite.size
    if not finite.size:
        return f"{nonfinite} non-finite of {value.size}"
    return (f"min {finite.min():.6g} max {finite.max():.6g} mean {finite.mean():.6g}"
            + (f", {nonfinite} non-finite" if nonfinite else ""))


def instrumented(graph: Graph) -> tuple[Graph, list[Var]]:
    """The graph with every node's outputs also returned (after the original outputs)."""
    extra = []
    seen = set(graph.outputs) | set(graph.inputs)
    for node in graph.nodes:
        for var in node.outputs:
            if var not in seen:
                seen.add(var)
                extra.append(var)
    return Graph(list(graph.inputs), list(graph.nodes), list(graph.outputs) + extra), extra


def compare_graph(graph: Graph, leaves: list, run, rtol: float | None = None,
                  backend: str = "numba") -> Comparison:
    """Compare `run(instrumented graph, leaves)` (compiled outputs, in the instrumented
    graph's output order) with the interpreter, node by node."""
    wide, _ = instrumented(graph)
    compiled = dict(zip(wide.outputs, run(wide, leaves)))
    env = {var: np.asarray(leaf, var.dtype) for var, leaf in zip(graph.inputs, leaves)}
    namer = Namer()
    for var in graph.inputs:
        namer(var)
    checked = 0
    for k, node in enumerate(graph.nodes):
        values = eval_node(node, [env[v] for v in node.inputs])
        for var, ref in zip(node.outputs, values):
            env[var] = ref
            got = np.asarray(compiled[var])
            checked += 1
            error, tolerance = _error(got, ref, var, rtol)
            if error > tolerance:
                inputs = [compiled.get(v, env[v]) for v in node.inputs]
                inner, note = _localise(node, var, inputs, run, rtol)
                if isinstance(inner, Difference):  # found by running the body alone
                    found = inner
                    text = "in the kernel's body: " + found.text
                    return Comparison(checked, Difference(
                        k, node, found.node, found.var, found.compiled, found.reference,
                        found.error, found.tolerance, text), backend)
                text = _node_text(node, inner, namer) + note
                return Comparison(checked, Difference(k, node, inner, var, got, ref, error,
                                                      tolerance, text), backend)
        for var in node.outputs:
            env[var] = np.asarray(compiled[var])  # later nodes start from the compiled values
    return Comparison(checked, None, backend)


def _error(got: np.ndarray, ref: np.ndarray, var: Var, rtol: float | None):
    if got.shape != ref.shape:
        return float("inf"), 0.0
    if var.dtype.kind != "f":
        return float(np.count_nonzero(got != ref)), 0.0
    rtol = RTOL.get(var.dtype, 1e-6) if rtol is None else rtol
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    same_nan = np.isnan(ref64) == np.isnan(got64)
    both = np.isfinite(ref64) & np.isfinite(got64)
    if not same_nan.all() or not np.array_equal(ref64[~both & ~np.isnan(ref64)],
                                                got64[~both & ~np.isnan(ref64)]):
        return float("inf"), 0.0
    finite = ref64[both]
    scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    error = float(np.abs(got64[both] - finite).max()) if finite.size else 0.0
    return error, rtol * scale


def _localise(node: Node, var: Var, inputs: list, run, rtol):
    """For a FUSED kernel, the body node at fault: the body is compiled on its own (one op a
    kernel) and compared node by node on the kernel's inputs, giving the body's Difference;
    when every op agrees alone, the fault is in the fused loop, and the node computing the
    kernel's output `var` is named (a Node, and a note saying so)."""
    if node.op is not Op.FUSED:
        return None, ""
    body = node.params["body"]
    inner = body.outputs[node.outputs.index(var)]
    fallback = next((n for n in body.nodes if inner in n.outputs), None)
    if len(body.nodes) > 1:
        try:
            alone = compare_graph(body, inputs, run, rtol)
        except Exception:  # noqa: BLE001 - the body alone does not build: keep the kernel
            alone = None
        if alone is not None and alone.difference is not None:
            return alone.difference, ""
        if alone is not None:
            return fallback, "\n           (each op of the kernel agrees alone: the fused loop " \
                "differs)"
    return fallback, ""


def _node_text(node: Node, inner: Node | None, namer: Namer) -> str:
    shown = inner or node
    text = format_node(shown, namer if inner is None else Namer())
    comment = node_comment(shown)
    return text + (f"    # {comment}" if comment else "")
