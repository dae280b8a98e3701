"""Text and DOT printouts of a graph.

The text form is typed SSA with deterministic names (a, b, ..., z, ba, bb, ...), parameters
in brackets, and the user's source line (plus, for nodes made by a transformation, why they
exist) as a trailing comment. A fused kernel's body is printed indented under it.

    { lambda a:f32[4,3] b:f32[3,2] .
      let c:f32[4,2] = matmul a b                # model.py:12
      in ( c ) }
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from ir.types import TensorType

if TYPE_CHECKING:  # ir/graph.py imports this module (Graph.__str__): no import back
    from ir.graph import Graph, Node, Var

COMMENT_COLUMN = 48


def var_name(index: int) -> str:
    """Names in order: a..z, ba..bz, ca.. (like JAX: no name is a prefix-collision of another)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    name = letters[index % 26]
    index //= 26
    while index:
        name = letters[index % 26] + name
        index //= 26
    return name


class Namer:
    """Assigns names to vars in order of first appearance."""

    def __init__(self) -> None:
        self.names: dict[Var, str] = {}
        self.by_id: dict[int, str] = {}

    def __call__(self, var: Var) -> str:
        if var not in self.names:
            self.names[var] = var_name(len(self.names))
            self.by_id[var.id] = self.names[var]
        return self.names[var]

    def typed(self, var: Var) -> str:
        return f"{self(var)}:{var.type}"


# A note may refer to a value as %<Var.id> (autodiff: "vjp matmul[1] of %42"); printouts
# show the value's name instead.
_VAR_REF = re.compile(r"%(\d+)")


def node_comment(node: Node, name: Namer | None = None) -> str:
    parts = []
    if node.source is not None:
        parts.append(str(node.source))
    if node.note:
        note = node.note
        if name is not None:
            note = _VAR_REF.sub(lambda m: name.by_id.get(int(m.group(1)), m.group(0)), note)
        parts.append(note)
    return "  ".join(parts)


def format_params(params: dict[str, Any]) -> str:
    """Parameters as printed in brackets: ``[axes=(1,) shape=(128,10)]``."""
    shown = [f"{k}={format_param(v)}" for k, v in params.items()
             if not _is_graph(v)]  # sub-graphs (bodies) are printed under the node
    return f"[{' '.join(shown)}]" if shown else ""


def format_param(value: Any) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= 4:
            flat = ", ".join(f"{v:g}" if value.dtype.kind == "f" else str(v) for v in value.ravel())
            return flat if value.ndim == 0 else f"[{flat}]"
        return f"<{TensorType(value.shape, value.dtype)}>"
    if isinstance(value, np.dtype):
        return str(TensorType((), value))[:-2]
    if isinstance(value, tuple):
        inner = ",".join(format_param(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_node(node: Node, name: Namer) -> str:
    args = " ".join(name(v) for v in node.inputs)
    outs = " ".join(name.typed(v) for v in node.outputs)
    return f"{outs} = {node.op.value}{format_params(node.params)} {args}".rstrip()


def _format_lines(graph: Graph, name: Namer, indent: str) -> list[str]:
    head = " ".join(name.typed(v) for v in graph.inputs)
    lines = [f"{indent}{{ lambda {head} ."]
    for i, node in enumerate(graph.nodes):
        text = f"{indent}  {'let' if i == 0 else '   '} {format_node(node, name)}"
        comment = node_comment(node, name)
        if comment:
            text = f"{text.ljust(COMMENT_COLUMN)}  # {comment}"
        lines.append(text)
        bodies = sub_graphs(node)
        for key, body in node.params.items():  # a kernel's or a loop's body, a loop's cond
            if any(body is b for b in bodies):
                if len(bodies) > 1:
                    lines.append(f"{indent}        {key}:")
                lines.extend(_format_lines(body, Namer(), indent + "        "))
    outs = " ".join(name(v) for v in graph.outputs)
    lines.append(f"{indent}  in ( {outs} ) }}")
    return lines


def sub_graphs(node: Node) -> list[Graph]:
    """The graphs a node carries: a fused kernel's body, a loop's body (and a while's cond)."""
    return [v for v in node.params.values() if _is_graph(v)]


def _is_graph(value: Any) -> bool:
    """A sub-graph in a node's params (by its shape: ir/graph.py imports this module, not the
    other way round)."""
    return all(hasattr(value, a) for a in ("inputs", "nodes", "outputs"))


def format_graph(graph: Graph) -> str:
    """The graph as typed SSA text (see the module docstring)."""
    return "\n".join(_format_lines(graph, Namer(), ""))


# node role (ir/graph.py's Role) -> box fill in pictures: forward nodes plain
ROLE_FILLS = {"backward": "#dbe9f6", "recomputed": "#fde2c8"}


def to_dot(graph: Graph, title: str = "graph") -> str:
    """A Graphviz DOT description: inputs as ellipses, ops as boxes (backward nodes filled
    blue, recomputed ones orange: `ROLE_FILLS`), edges labelled by type."""
    name = Namer()
    lines = [f'digraph "{title}" {{', "  rankdir=TB;", '  node [fontname="monospace"];']
    defined: dict[Var, str] = {}
    for var in graph.inputs:
        defined[var] = f"in_{name(var)}"
        lines.append(f'  {defined[var]} [shape=ellipse label="{name.typed(var)}"];')
    for i, node in enumerate(graph.nodes):
        label = f"{node.op.value}{format_params(node.params)}"
        if node.source is not None:
            label += f"\\n{node.source}"
        fill = ROLE_FILLS.get(node.role.value)
        style = f' style=filled fillcolor="{fill}"' if fill else ""
        lines.append(f'  n{i} [shape=box label="{label}"{style}];')
        for var in node.inputs:
            lines.append(f'  {defined[var]} -> n{i} [label="{name.typed(var)}"];')
        for var in node.outputs:
            defined[var] = f"n{i}"
    for k, var in enumerate(graph.outputs):
        lines.append(f'  out{k} [shape=ellipse label="out {k}"];')
        lines.append(f'  {defined[var]} -> out{k} [label="{name.typed(var)}"];')
    lines.append("}")
    return "\n".join(lines)


class Listing(str):
    """A printout (IR, kernel summary, generated source): a str, which a notebook shows as
    HTML with the comments greyed."""

    def _repr_html_(self) -> str:
        return html_listing(self)


def html_listing(text: str) -> str:
    """A printout as notebook HTML: monospace, comments (after `#`) greyed."""
    lines = []
    for line in text.splitlines():
        code, hash_, comment = line.partition("  # ")
        shown = html.escape(code)
        if hash_:
            shown += f'  <span style="color:#6a737d"># {html.escape(comment)}</span>'
        lines.append(shown)
    body = "\n".join(lines)
    return f'<pre style="font-family:monospace;line-height:1.25">{body}</pre>'
