"""The IR's records: `Var` (a typed SSA value), `Node` (one op application), `Graph`.

A graph is a list of inputs, nodes in topological order and a list of outputs. Nodes are
never mutated by passes: a pass builds a new node list. Each node keeps the user's source
line (`Source`) and, for nodes made by a transformation, a `note` saying why it exists
(for example ``vjp of matmul d``), which printouts show as comments.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ir.ops import Op
from ir.types import TensorType

_ids = itertools.count()


class Var:
    """One SSA value. Identity is the object itself; `id` only orders and names it stably."""

    __slots__ = ("type", "id")

    def __init__(self, type: TensorType):
        self.type = type
        self.id = next(_ids)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.type.dtype

    @property
    def ndim(self) -> int:
        return self.type.ndim

    def __repr__(self) -> str:
        return f"%{self.id}:{self.type}"


@dataclass(frozen=True)
class Source:
    """Where in the user's code a node was recorded."""

    file: str
    line: int
    function: str = ""

    def __str__(self) -> str:
        return f"{os.path.basename(self.file)}:{self.line}"


@dataclass(eq=False)
class Node:
    op: Op
    inputs: tuple[Var, ...]
    outputs: tuple[Var, ...]
    params: dict[str, Any] = field(default_factory=dict)
    source: Source | None = None
    note: str = ""

    @property
    def out(self) -> Var:
        """The single output of a single-output node."""
        (out,) = self.outputs
        return out

    def __repr__(self) -> str:
        ins = " ".join(map(repr, self.inputs))
        outs = " ".join(map(repr, self.outputs))
        return f"<{outs} = {self.op.value}{format_params(self.params)} {ins}>"


@dataclass(eq=False)
class Graph:
    inputs: list[Var]
    nodes: list[Node]
    outputs: list[Var]

    def producers(self) -> dict[Var, Node]:
        """Map each node output to the node that defines it."""
        return {out: node for node in self.nodes for out in node.outputs}

    def consumers(self) -> dict[Var, list[Node]]:
        """Map each value to the nodes that read it (graph outputs are not nodes)."""
        users: dict[Var, list[Node]] = {}
        for node in self.nodes:
            for var in node.inputs:
                users.setdefault(var, []).append(node)
        return users

    def __str__(self) -> str:
        from ir.printer import format_graph

        return format_graph(self)


def format_params(params: dict[str, Any]) -> str:
    """Parameters as printed in brackets: ``[axes=(1,) shape=(128,10)]``."""
    shown = [f"{k}={format_param(v)}" for k, v in params.items()
             if not isinstance(v, Graph)]  # sub-graphs (bodies) are printed under the node
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


def param_key(params: dict[str, Any]) -> tuple:
    """A hashable, value-based key for a node's parameters (used by CSE and caches)."""
    items = []
    for name, value in sorted(params.items()):
        if isinstance(value, np.ndarray):
            value = ("array", value.dtype.str, value.shape, value.tobytes())
        elif isinstance(value, Graph):
            value = ("graph", id(value))
        items.append((name, value))
    return tuple(items)
