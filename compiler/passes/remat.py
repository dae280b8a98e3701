"""Rematerialisation: which forward values the backward reads as saved arrays, and which it
recomputes from others, chosen by a minimum cut (as PyTorch's min-cut partitioner does).

Runs in the FUSE stage after `prepare_for_fusion` and before `fuse_elementwise`, on a joint
graph (forward and backward in one driver; backward nodes are those autodiff emitted, with
`Role.BACKWARD`, and everything computed from them, such as an optimiser's update). "Saving"
a value means its buffer stays live from the forward across into the backward, so what the cut
minimises is the bytes held across that boundary; the effect shows in `plan_buffers`' peak.

The flow network, on networkx: each forward value v is an edge v_in -> v_out whose capacity is
its bytes (free for graph inputs, outputs, constants and 0-d values, which need no work buffer);
the source feeds every value the backward cannot recompute (inputs, matmuls, reductions,
gathers, costly maths such as exp); a cheap op (`RECOMPUTABLE`) links its inputs' v_out to its
output's v_in with infinite capacity; every forward value a backward node reads feeds the sink.
A cut edge v_in -> v_out is a saved value; a value whose v_in is on the sink side is recomputed,
by copies of its producers (with `Role.RECOMPUTED`) placed just before the first backward node
that reads it (fusion then pulls those copies into that node's kernel).

Whether a recomputation pays is a question for the later stages (fusion and the buffer plan),
so the pass takes it as a cost model, `planned_bytes: Graph -> int`, which compiler/pipeline.py
hands it (compiler/cost_model.py); the pass itself runs no later stage.
"""

from __future__ import annotations

from collections.abc import Callable

import networkx as nx

from compiler.passes.move_work import CHEAP_ELEMENTWISE, LOOP_OPS
from ir.graph import Graph, Node, Role, Var
from ir.ops import Op

# Forward ops the backward may recompute instead of reading a saved result.
RECOMPUTABLE = CHEAP_ELEMENTWISE | frozenset({Op.BROADCAST_TO, Op.RESHAPE, Op.CONSTANT})
RECOMPUTED_NOTE = "vjp recomputed"  # the copies' notes start with this (for printouts)
# the fraction of the planned arena bytes a recomputation must save (more than) to be kept
MIN_SAVING = 0.1
# ops that do not split loops: fusion puts them in, or absorbs them into, loop bodies
SEGMENT_OPS = LOOP_OPS | frozenset({Op.BROADCAST_TO, Op.RESHAPE, Op.CONSTANT})


def backward_nodes(graph: Graph) -> set[int]:
    """Indices of the nodes autodiff emitted (or recomputed for the backward), and of every node
    reading their results."""
    found: set[int] = set()
    derived: set[Var] = set()
    for i, node in enumerate(graph.nodes):
        if node.role is not Role.FORWARD or any(v in derived for v in node.inputs):
            found.add(i)
            derived.update(node.outputs)
    return found


def _segments(graph: Graph) -> list[int]:
    """Per node, the number of kernel barriers before it (ops no loop can hold: matmul,
    gather, ...). A backward loop op reading a value of its own segment will share a loop with
    it, so that value is never held across the boundary."""
    segment, found = 0, []
    for node in graph.nodes:
        if node.op not in SEGMENT_OPS:
            segment += 1
        found.append(segment)
    return found


def held_reads(graph: Graph, backward: set[int]) -> list[tuple[int, Var]]:
    """(backward node, forward value it reads) pairs where the value is held across a kernel
    barrier between its producer and the reader."""
    segment = _segments(graph)
    where = {v: i for i, node in enumerate(graph.nodes) if i not in backward
             for v in node.outputs}
    where.update((v, -1) for v in graph.inputs)
    reads = []
    for i in sorted(backward):
        node = graph.nodes[i]
        for var in node.inputs:
            p = where.get(var)
            if p is None:
                continue
            if node.op in LOOP_OPS and p >= 0 and segment[p] == segment[i]:
                continue
            reads.append((i, var))
    return reads


def _capacity(var: Var, node: Node | None, free: set[Var]) -> int:
    """Bytes held across the boundary when `var` is saved."""
    if node is None or var in free or var.ndim == 0 or node.op == Op.CONSTANT:
        return 0
    return var.type.nbytes


def choose_saved_values(graph: Graph) -> tuple[set[Var], set[Var]]:
    """(saved, recomputed): the forward values the backward reads across a kernel barrier
    as they are, and those it recomputes; both empty when the graph has no backward."""
    backward = backward_nodes(graph)
    if not backward:
        return set(), set()
    return _cut(graph, backward, held_reads(graph, backward))


def _cut(graph: Graph, backward: set[int],
         reads: list[tuple[int, Var]]) -> tuple[set[Var], set[Var]]:
    """`choose_saved_values` given the backward nodes and their held reads."""
    producer: dict[Var, Node] = {}
    for i, node in enumerate(graph.nodes):
        if i not in backward:
            producer.update((v, node) for v in node.outputs)
    needed = {v for _, v in reads}
    if not needed:
        return set(), set()
    free = set(graph.inputs) | set(graph.outputs)
    network = nx.DiGraph()
    for var in graph.inputs:
        network.add_edge("source", ("in", var))
        network.add_edge(("in", var), ("out", var), capacity=0)
    for var, node in producer.items():
        network.add_edge(("in", var), ("out", var), capacity=_capacity(var, node, free))
        if node.op in RECOMPUTABLE and len(node.outputs) == 1:
            for x in node.inputs:
                network.add_edge(("out", x), ("in", var))
        else:
            network.add_edge("source", ("in", var))
    for var in needed:
        network.add_edge(("out", var), "sink")
    network.add_node("source")
    _, (source_side, _) = nx.minimum_cut(network, "source", "sink")
    saved = {v for v in needed if ("in", v) in source_side}
    recomputed = {v for v in producer if ("in", v) not in source_side
                  and ("out", v) in network and ("in", v) in network}
    return saved, recomputed


def rematerialize_cheap_values(graph: Graph, planned_bytes: Callable[[Graph], int]) -> Graph:
    """Recompute cheap forward values in the backward where that holds fewer bytes across the
    forward/backward boundary (see the module docstring) and lowers the planned peak, as
    `planned_bytes` (the cost model) prices a graph; returns `graph` itself otherwise.

    >>> import numpy as np
    >>> from compiler import compile, value_and_grad
    >>> from compiler.cost_model import planned_arena_bytes
    >>> def loss(w, x):
    ...     for _ in range(3):
    ...         x = np.maximum(x @ w, 0.0)
    ...     return np.sum(x)
    >>> g = compile(value_and_grad(loss)).trace(np.ones((8, 8), "f4"), np.ones((8, 8), "f4"))
    >>> before = sum(n.op.value == "max" for n in g.graph.nodes)
    >>> rematerialized = rematerialize_cheap_values(g.graph, planned_arena_bytes)
    >>> after = sum(n.op.value == "max" for n in rematerialized.nodes)
    >>> before, after  # two relu(z) are recomputed from z for the backward's matmuls
    (3, 5)
    """
    backward = backward_nodes(graph)
    if not backward:
        return graph
    reads = held_reads(graph, backward)
    _, recomputed = _cut(graph, backward, reads)
    rewritten = {(i, v) for i, v in reads if v in recomputed}
    if not rewritten:
        return graph
    producer = graph.producers()
    copies: dict[Var, Var] = {}
    nodes: list[Node] = []

    def recompute(var: Var) -> Var:
        if var not in recomputed:
            return var
        if var not in copies:
            node = producer[var]
            inputs = tuple(recompute(x) for x in node.inputs)
            out = Var(var.type)
            nodes.append(Node(node.op, inputs, (out,), node.params, node.source,
                              f"{RECOMPUTED_NOTE}: {node.note}".rstrip(": "), Role.RECOMPUTED))
            copies[var] = out
        return copies[var]

    for i, node in enumerate(graph.nodes):
        if i in backward:
            inputs = tuple(recompute(v) if (i, v) in rewritten else v for v in node.inputs)
            if inputs != node.inputs:
                node = Node(node.op, inputs, node.outputs, node.params, node.source, node.note,
                            node.role)
        nodes.append(node)
    candidate = Graph(list(graph.inputs), nodes, list(graph.outputs))
    # The cut counts bytes held across the boundary; whether the peak falls depends on the
    # schedule, so keep the recomputation only when the planned arenas shrink enough to pay
    # for the kernels it may add.
    before = planned_bytes(graph)
    return candidate if planned_bytes(candidate) < before * (1 - MIN_SAVING) else graph
