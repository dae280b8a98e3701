"""The verifier: re-derives every type in a graph and checks SSA form.

Run after every pass in tests. A failure names the node, prints it with its neighbours
(producers of its inputs and the nodes that read it) and says what was wrong.
"""

from __future__ import annotations

from ir.graph import Graph, Node, Role, Var
from ir.printer import Namer, format_node
from ir.shapes import SHAPE_RULES, ShapeError


class VerifyError(AssertionError):
    """A graph that is not well-formed."""


def _context(graph: Graph, index: int, names: Namer) -> str:
    node = graph.nodes[index]
    producers = graph.producers()
    around = [producers[v] for v in node.inputs if v in producers]
    users = [n for n in graph.nodes[index + 1 :] if any(v in n.inputs for v in node.outputs)]
    lines = [f"    {format_node(n, names)}" for n in around]
    lines.append(f"  > {format_node(node, names)}    # {node.source or '?'} {node.note}".rstrip())
    lines += [f"    {format_node(n, names)}" for n in users[:3]]
    return "\n".join(lines)


def verify(graph: Graph) -> Graph:
    """Check `graph`; return it unchanged or raise VerifyError."""
    names = Namer()
    for v in graph.inputs:
        names(v)
    defined: set[Var] = set(graph.inputs)
    if len(defined) != len(graph.inputs):
        raise VerifyError("a graph input is listed twice")
    for index, node in enumerate(graph.nodes):
        problem = _check_node(node, defined)
        if problem:
            raise VerifyError(f"node {index}: {problem}\n{_context(graph, index, names)}")
        defined.update(node.outputs)
    for var in graph.outputs:
        if var not in defined:
            raise VerifyError(f"graph output {var!r} is never defined")
    return graph


def _check_node(node: Node, defined: set[Var]) -> str:
    for var in node.inputs:
        if var not in defined:
            return f"input {var!r} is used before it is defined"
    for var in node.outputs:
        if var in defined:
            return f"output {var!r} is defined twice"
    if node.op not in SHAPE_RULES:
        return f"op {node.op} has no shape rule"
    if not isinstance(node.role, Role) or not isinstance(node.note, str):
        return (f"role {node.role!r} and note {node.note!r}: a node's role is a Role and its "
                "note a str (Node's fields are op, inputs, outputs, params, source, note, role)")
    try:
        expected = SHAPE_RULES[node.op](*(v.type for v in node.inputs), **node.params)
    except (ShapeError, TypeError) as error:
        return f"{node.op.value} rejects its operands: {error}"
    got = tuple(v.type for v in node.outputs)
    if tuple(expected) != got:
        return f"{node.op.value} should give {tuple(expected)}, the node declares {got}"
    for key, body in node.params.items():
        if isinstance(body, Graph):
            try:
                verify(body)
            except VerifyError as error:
                return f"{node.op.value} {key} is malformed: {error}"
    return ""
