"""A rebuilder for rewriting passes (simplify, fold_constants, CSE): copies a graph node by
node, lets a pass replace a value by another or emit new nodes, and renames later reads.

Passes never mutate nodes: `GraphBuilder` builds a new node list. When nothing was replaced,
`finish()` returns the original graph object, so `iterate_to_fixed_point`
(compiler/pipeline.py) can see that a round changed nothing.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from ir.graph import Graph, Node, Var
from ir.ops import Op
from ir.shapes import infer


def scalar_value(producers: Mapping[Var, Node], var: Var) -> Any:
    """The one value every element of `var` holds, if it is a constant (or a broadcast of
    one) whose elements are all equal; else None. `producers`: var -> the node computing it."""
    node = producers.get(var)
    while node is not None and node.op == Op.BROADCAST_TO:
        node = producers.get(node.inputs[0])
    if node is None or node.op != Op.CONSTANT:
        return None
    value = node.params["value"]
    if value.size == 0 or value.size > 1024:
        return None
    first = value.flat[0]
    return first.item() if np.all(value == first) else None


class GraphBuilder:
    """Copy `graph` node by node, with replacements (see the module docstring)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes: list[Node] = []
        self.replaced: dict[Var, Var] = {}
        self.producers: dict[Var, Node] = {}
        self.uses: Counter[Var] = Counter(v for n in graph.nodes for v in n.inputs)
        self.uses.update(graph.outputs)
        self.changed = False

    def resolve(self, var: Var) -> Var:
        while var in self.replaced:
            var = self.replaced[var]
        return var

    def renamed(self, node: Node) -> Node:
        """`node` reading the current replacement of each of its inputs."""
        inputs = tuple(self.resolve(v) for v in node.inputs)
        if inputs == node.inputs:
            return node
        return dataclasses.replace(node, inputs=inputs)

    def add(self, node: Node) -> None:
        """Keep `node` (already `renamed`); dropping or renaming nodes follows a `replace`."""
        self.nodes.append(node)
        for out in node.outputs:
            self.producers[out] = node

    def emit(self, op: Op, inputs: tuple[Var, ...], params: dict[str, Any], like: Node) -> Var:
        """Append a new single-output node typed by the shape rules; it inherits `like`'s
        source line, note and role."""
        (out_type,) = infer(op, [v.type for v in inputs], params)
        node = Node(op, tuple(inputs), (Var(out_type),), params, like.source, like.note,
                    like.role)
        self.changed = True
        self.nodes.append(node)
        self.producers[node.out] = node
        return node.out

    def constant(self, value: Any, dtype: np.dtype, like: Node) -> Var:
        value = np.asarray(value, dtype=dtype)
        value.flags.writeable = False
        return self.emit(Op.CONSTANT, (), {"value": value}, like)

    def replace(self, old: Var, new: Var) -> None:
        """Every later read of `old` (and the graph outputs) reads `new` instead."""
        assert old.type == new.type, (old, new)
        self.replaced[old] = new
        self.uses[new] += self.uses[old]
        self.changed = True

    def producer(self, var: Var) -> Node | None:
        return self.producers.get(var)

    def producer_op(self, var: Var) -> Op | None:
        node = self.producers.get(var)
        return node.op if node is not None else None

    def scalar_value(self, var: Var) -> Any:
        return scalar_value(self.producers, var)

    def finish(self) -> Graph:
        if not self.changed:
            return self.graph
        outputs = [self.resolve(v) for v in self.graph.outputs]
        return Graph(list(self.graph.inputs), self.nodes, outputs)
