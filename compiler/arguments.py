"""What a compiled function assumes about its arguments: each leaf's type (`LeafSpec`), the
readable paths of the leaves (``params['w1']``), one trace's record (`Traced`), and the label
range checks made with NumPy before a call (for `nn.cross_entropy`'s labels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler.errors import TraceError
from compiler.pytree import TreeDef
from compiler.tracing import Tracer
from ir.graph import Graph
from ir.types import DTYPES, TensorType, is_python_scalar

_PY_SCALAR_DTYPES = {bool: np.dtype(np.bool_), int: np.dtype(np.int64),
                     float: np.dtype(np.float64)}


@dataclass(frozen=True)
class LeafSpec:
    """What the compiled code assumes about one argument leaf."""

    type: TensorType
    weak: bool  # a Python scalar: traced, weakly typed

    def __str__(self) -> str:
        return f"{self.type} (Python {self.type.dtype.kind == 'f' and 'float' or 'int'})" \
            if self.weak else str(self.type)


@dataclass
class Traced:
    """One trace of the function: the graph and how its inputs/outputs map to pytrees."""

    graph: Graph
    in_tree: TreeDef
    in_specs: tuple[LeafSpec, ...]
    in_paths: tuple[str, ...]
    out_tree: TreeDef
    lowered: dict[str, Graph] = field(default_factory=dict)
    executable: Any = None
    donate: dict[int, int] = field(default_factory=dict)  # output leaf -> input leaf
    # (input leaf, number of classes, path) of each argument nn.cross_entropy used as labels
    labels: list[tuple[int, int, str]] = field(default_factory=list)


def leaf_paths(tree: Any, prefix: str) -> list[str]:
    """Readable paths of the leaves, in flatten order: ``params['w1']``, ``batch[0]``."""
    if tree is None:
        return []
    if isinstance(tree, dict):
        return [p for k in sorted(tree) for p in leaf_paths(tree[k], f"{prefix}[{k!r}]")]
    if isinstance(tree, tuple) and hasattr(type(tree), "_fields"):
        return [p for f, c in zip(tree._fields, tree) for p in leaf_paths(c, f"{prefix}.{f}")]
    if isinstance(tree, (list, tuple)):
        return [p for i, c in enumerate(tree) for p in leaf_paths(c, f"{prefix}[{i}]")]
    return [prefix]


def arg_names(fn: Callable, count: int) -> list[str]:
    """The names of `fn`'s first `count` positional parameters (``args[i]`` past them)."""
    while getattr(fn, "__chainjit_wrapped__", None) is not None:  # grad(f): f's names
        fn = fn.__chainjit_wrapped__
    code = getattr(fn, "__code__", None)
    names = list(code.co_varnames[: code.co_argcount]) if code else []
    return [names[i] if i < len(names) else f"args[{i}]" for i in range(count)]


def leaf_spec(leaf: Any, path: str, static_hint: str) -> LeafSpec:
    if is_python_scalar(leaf):
        return LeafSpec(TensorType((), _PY_SCALAR_DTYPES[type(leaf)]), weak=True)
    if isinstance(leaf, (np.ndarray, np.generic)):
        if leaf.dtype not in DTYPES:
            supported = ", ".join(map(str, DTYPES))
            raise TraceError(
                f"argument {path} has dtype {leaf.dtype}; chainjit supports {supported}",
                fix=f"convert it first, for example {path}.astype(np.float32)",
            )
        return LeafSpec(TensorType(leaf.shape, leaf.dtype), weak=False)
    if isinstance(leaf, Tracer):
        return LeafSpec(leaf.ir_var.type, leaf.weak)
    raise TraceError(
        f"argument {path} is a {type(leaf).__name__}; compiled functions take NumPy arrays, "
        "Python scalars and nested dicts/lists/tuples of them",
        fix=f"convert it with np.asarray, or mark it static: {static_hint}",
    )


def leaf_types(key: tuple) -> list[str]:
    return [str(spec.type) for spec in key[1]]


def check_labels(labels: list[tuple[int, int, str]], leaves: list) -> None:
    """LabelRangeError for a label argument of nn.cross_entropy outside [0, classes): the
    compiled code cannot raise, it would read another class's score."""
    if labels:
        from compiler.nn import check_labels

        for index, classes, path in labels:
            check_labels(leaves[index], classes, f"labels {path}")


def with_label_checks(entry: Callable, labels: list[tuple[int, int, str]]) -> Callable:
    if not labels:
        return entry

    def call(leaves: list):
        check_labels(labels, leaves)
        return entry(leaves)

    return call
