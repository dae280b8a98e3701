"""Elementwise fusion: groups elementwise work (and the sums and maxima it feeds) into loop
kernels, FUSED nodes that codegen turns into one loop nest each.

Runs in the FUSE stage, after OPTIMIZE. Takes any graph and gives one where every elementwise
op and every REDUCE_SUM / REDUCE_MAX sits inside a FUSED node:

    Node(Op.FUSED, inputs, outputs, params={"body": Graph, "kind": KernelKind.LOOP | REDUCE,
                                             "shape": S})

S is the iteration shape: an elementwise op iterates over its output, a reduction over its
input. A group holds ops of one S. Bodies also absorb, as private copies, the BROADCAST_TOs
that feed the group (codegen indexes the small array, no copy is made) and 0-d CONSTANTs.
A value computed in a group and read outside it (or returned) becomes an output of the node.

What gets grouped, on a networkx DiGraph whose nodes are the graph's nodes and whose groups
are contracted as they form:
  * vertical chains: an elementwise op joins the group of an op that reads it (consumer-first,
    so a backward mask `h > 0` is recomputed in the backward kernel that uses it rather than
    written out by the forward one);
  * reductions with the elementwise work that feeds them (`sum(exp(x - m))` is one pass);
  * epilogues after a matmul: the matmul stays a MATMUL node, and the bias add, activation
    and masks reading its output form one kernel over its shape;
  * siblings: groups of one S reading the same value become one multi-output loop.
Values `rematerialize_cheap_values` chose to recompute in the backward (their copies have
`Role.RECOMPUTED`) only join the kernels of the backward nodes that read them: in a
forward kernel, or a sibling loop running early, they would be held as if saved.
A reduction's result is never read inside its own group (codegen finishes an accumulator
only after the loop nest).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import networkx as nx

from compiler.passes.dce import eliminate_dead_code
from ir.graph import Graph, Node, Role, Var
from ir.ops import ELEMENTWISE, KernelKind, Op

FUSIBLE_REDUCTIONS = frozenset({Op.REDUCE_SUM, Op.REDUCE_MAX})


def is_fusible(node: Node) -> bool:
    """Ops that live inside loop bodies as computations (each belongs to exactly one group)."""
    return node.op in ELEMENTWISE or node.op in FUSIBLE_REDUCTIONS


def is_absorbable(node: Node) -> bool:
    """Ops copied into every body that reads them: broadcasts and 0-d constants."""
    if node.op == Op.BROADCAST_TO:
        return node.inputs[0].shape != node.out.shape
    return node.op == Op.CONSTANT and node.out.ndim == 0


def iteration_shape(node: Node) -> tuple[int, ...]:
    return node.inputs[0].shape if node.op in FUSIBLE_REDUCTIONS else node.outputs[0].shape


@dataclass
class _Group:
    shape: tuple[int, ...]
    members: set[int]
    recomputed: bool = False  # holds a copy made by rematerialisation
    forward: bool = False  # holds a node autodiff did not emit
    # fusible nodes that read (maybe through a broadcast) a reduction of this group
    readers_of_reductions: set[int] = field(default_factory=set)


class _Fusion:
    """The grouping state: `quotient` is the networkx DAG of the graph with every group
    contracted to one vertex, named by one of its members' indices."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes = graph.nodes
        self.producer = {v: i for i, n in enumerate(graph.nodes) for v in n.outputs}
        self.readers: dict[Var, list[int]] = {}
        for i, node in enumerate(graph.nodes):
            for var in node.inputs:
                self.readers.setdefault(var, []).append(i)
        self.returned = set(graph.outputs)
        self.group_of: dict[int, int] = {}
        self.groups: dict[int, _Group] = {}
        self.quotient = nx.DiGraph()
        self._build_quotient()

    def producer_node(self, var: Var) -> Node | None:
        p = self.producer.get(var)
        return None if p is None else self.nodes[p]

    # -- the networkx view ----------------------------------------------------------------
    def _present(self, i: int) -> bool:
        """Absorbable nodes read only by fusible ones exist only as copies inside bodies."""
        node = self.nodes[i]
        if not is_absorbable(node):
            return True
        out = node.out
        return out in self.returned or any(
            not is_fusible(self.nodes[r]) for r in self.readers.get(out, ())
        )

    def sources(self, i: int) -> list[int]:
        """The nodes node i really reads: a fusible node reads through absorbed nodes."""
        node = self.nodes[i]
        found = []
        for var in node.inputs:
            p = self.producer.get(var)
            if p is not None and is_fusible(node) and is_absorbable(self.nodes[p]):
                inner = self.nodes[p].inputs
                p = self.producer.get(inner[0]) if inner else None
                if p is not None and is_absorbable(self.nodes[p]):
                    p = None if self.nodes[p].op == Op.CONSTANT else p
            if p is not None:
                found.append(p)
        return found

    def _build_quotient(self) -> None:
        for i, node in enumerate(self.nodes):
            if not self._present(i):
                continue
            self.quotient.add_node(i)
            if is_fusible(node):
                self.group_of[i] = i
                self.groups[i] = _Group(iteration_shape(node), {i},
                                        node.role is Role.RECOMPUTED,
                                        node.role is Role.FORWARD)
            for p in self.sources(i):
                self.quotient.add_edge(p, i)
        for i, node in enumerate(self.nodes):
            if node.op in FUSIBLE_REDUCTIONS:
                self.groups[i].readers_of_reductions |= self._readers_through_broadcasts(i)

    def _readers_through_broadcasts(self, i: int) -> set[int]:
        found = set()
        for r in self.readers.get(self.nodes[i].out, ()):
            if is_fusible(self.nodes[r]):
                found.add(r)
            elif is_absorbable(self.nodes[r]):
                found |= {x for x in self.readers.get(self.nodes[r].out, ())
                          if is_fusible(self.nodes[x])}
        return found

    # -- merging --------------------------------------------------------------------------
    def _reaches_around(self, start: int, goal: int) -> bool:
        """Is there a path start -> ... -> goal through at least one other vertex?"""
        stack = [s for s in self.quotient.successors(start) if s != goal]
        seen = set(stack)
        while stack:
            vertex = stack.pop()
            if vertex == goal:
                return True
            for s in self.quotient.successors(vertex):
                if s not in seen:
                    seen.add(s)
                    stack.append(s)
        return False

    def try_merge(self, a: int, b: int, sibling: bool = False) -> int:
        """Merge the groups of nodes a and b if that keeps the contract; return a's group.

        CONVEXITY: a group must be convex, no path may leave it and come back into it (the
        kernel would need a value computed outside from one of its own results, i.e. it would
        have to run both before and after that value). Groups are vertices of the contracted
        DAG `quotient`, so two groups may merge exactly when no path joins them through a
        third vertex, in either direction; contracting them then keeps the quotient acyclic.
        """
        x, y = self.group_of[a], self.group_of[b]
        if x == y:
            return x
        gx, gy = self.groups[x], self.groups[y]
        if gx.shape != gy.shape:
            return x
        if gx.readers_of_reductions & gy.members or gy.readers_of_reductions & gx.members:
            return x  # a reduction would be read inside its own loop nest
        if (gx.recomputed and gy.forward) or (gy.recomputed and gx.forward):
            return x  # a recomputed value would be computed in the forward after all
        if sibling and (gx.recomputed or gy.recomputed):
            return x  # it would be computed, and held, before the node that reads it
        if self._reaches_around(x, y) or self._reaches_around(y, x):
            return x  # the merged group would not be convex
        nx.contracted_nodes(self.quotient, x, y, self_loops=False, copy=False)
        gx.members |= gy.members
        gx.readers_of_reductions |= gy.readers_of_reductions
        gx.recomputed |= gy.recomputed
        gx.forward |= gy.forward
        for m in gy.members:
            self.group_of[m] = x
        del self.groups[y]
        return x

    def group_everything(self) -> None:
        fusible = [i for i, n in enumerate(self.nodes) if is_fusible(n)]
        for i in reversed(fusible):  # consumers first: pull producers into readers' kernels
            for p in self.sources(i):
                if self.nodes[p].op in ELEMENTWISE:
                    self.try_merge(i, p)
        for var in [*self.graph.inputs, *(v for n in self.nodes for v in n.outputs)]:
            readers = [r for r in self.readers.get(var, ()) if is_fusible(self.nodes[r])]
            if len(readers) > 1 and not self._is_constant(var):
                for r in readers[1:]:
                    self.try_merge(readers[0], r, sibling=True)

    def _is_constant(self, var: Var) -> bool:
        p = self.producer.get(var)
        return p is not None and self.nodes[p].op == Op.CONSTANT

    # -- building the fused graph ---------------------------------------------------------
    def build(self) -> Graph:
        first = {g: min(group.members) for g, group in self.groups.items()}
        order = nx.lexicographical_topological_sort(
            self.quotient, key=lambda v: first.get(v, v)
        )
        nodes = []
        for vertex in order:
            if vertex in self.groups:
                fused = self._fused_node(self.groups[vertex])
                if fused is not None:
                    nodes.append(fused)
            else:
                nodes.append(self.nodes[vertex])
        return Graph(list(self.graph.inputs), nodes, list(self.graph.outputs))

    def _fused_node(self, group: _Group) -> Node | None:
        members = sorted(group.members)
        body = BodyBuilder(self.producer_node)
        for i in members:
            body.copy(self.nodes[i])
        escaping = [
            out
            for i in members
            for out in self.nodes[i].outputs
            if out in self.returned
            or any(r not in group.members for r in self.readers.get(out, ()))
        ]
        if not escaping:
            return None
        reduces = any(self.nodes[i].op in FUSIBLE_REDUCTIONS for i in members)
        kind = KernelKind.REDUCE if reduces else KernelKind.LOOP
        graph = Graph(body.inputs, body.nodes, [body.inner[v] for v in escaping])
        main = self.nodes[members[-1]]
        params = {"body": graph, "kind": kind, "shape": group.shape}
        return Node(Op.FUSED, tuple(body.outer_inputs), tuple(escaping), params, main.source,
                    role=main.role)


class BodyBuilder:
    """Copies a group's nodes into a body graph with fresh vars, absorbing broadcasts and 0-d
    constants and turning every other outside value into a body input. `producer`: var ->
    the node computing it in the graph the group comes from (None for an input)."""

    def __init__(self, producer: Callable[[Var], Node | None]):
        self.producer = producer
        self.inputs: list[Var] = []
        self.outer_inputs: list[Var] = []
        self.nodes: list[Node] = []
        self.inner: dict[Var, Var] = {}

    def copy(self, node: Node) -> None:
        inputs = tuple(self.read(v) for v in node.inputs)
        outputs = tuple(Var(v.type) for v in node.outputs)
        self.nodes.append(Node(node.op, inputs, outputs, node.params, node.source, node.note,
                               node.role))
        self.inner.update(zip(node.outputs, outputs))

    def read(self, var: Var, through_broadcast: bool = True) -> Var:
        if var in self.inner:
            return self.inner[var]
        node = self.producer(var)
        if node is not None and is_absorbable(node):
            if node.op == Op.CONSTANT:
                self.copy(node)
                return self.inner[var]
            if through_broadcast:
                source = self.read(node.inputs[0], through_broadcast=False)
                out = Var(var.type)
                self.nodes.append(Node(Op.BROADCAST_TO, (source,), (out,), node.params,
                                       node.source, node.note, node.role))
                self.inner[var] = out
                return out
        inner = Var(var.type)
        self.inputs.append(inner)
        self.outer_inputs.append(var)
        self.inner[var] = inner
        return inner


def fuse_elementwise(graph: Graph) -> Graph:
    """Group elementwise work into FUSED loop kernels (see the module docstring).

    >>> import numpy as np
    >>> from compiler import compile
    >>> f = compile(lambda x: np.sum(np.exp(np.tanh(x) * 2.0)))
    >>> [n.op.value for n in fuse_elementwise(f.trace(np.ones(4, np.float32)).graph).nodes]
    ['fused']
    """
    fusion = _Fusion(eliminate_dead_code(graph))
    fusion.group_everything()
    # Broadcasts and constants now copied into bodies may be left without readers.
    return eliminate_dead_code(fusion.build())
