"""Pytrees: nested dicts, lists, tuples and namedtuples with arrays and scalars at the leaves.

`tree_flatten` gives the leaves in a fixed order (dict keys sorted, as in JAX) and a hashable
`TreeDef` that rebuilds the structure with `tree_unflatten`. `None` is an empty subtree.

>>> leaves, tree = tree_flatten({"w": 1, "b": (2, 3)})
>>> leaves
[2, 3, 1]
>>> tree_unflatten(tree, [20, 30, 10])
{'b': (20, 30), 'w': 10}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ir.types import DTYPES, TensorType


@dataclass(frozen=True)
class TreeDef:
    kind: str  # "leaf", "none", "dict", "list", "tuple" or "namedtuple"
    meta: Any = None  # dict keys, or the namedtuple class
    children: tuple[TreeDef, ...] = ()

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(child.num_leaves for child in self.children)

    def __str__(self) -> str:
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        inner = [str(c) for c in self.children]
        if self.kind == "dict":
            return "{" + ", ".join(f"{k!r}: {v}" for k, v in zip(self.meta, inner)) + "}"
        if self.kind == "list":
            return "[" + ", ".join(inner) + "]"
        if self.kind == "namedtuple":
            return f"{self.meta.__name__}(" + ", ".join(inner) + ")"
        return "(" + ", ".join(inner) + ("," if len(inner) == 1 else "") + ")"


LEAF = TreeDef("leaf")


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def tree_flatten(tree: Any) -> tuple[list[Any], TreeDef]:
    leaves: list[Any] = []
    return leaves, _flatten(tree, leaves)


def _flatten(tree: Any, leaves: list[Any]) -> TreeDef:
    if tree is None:
        return TreeDef("none")
    if isinstance(tree, dict):
        keys = tuple(sorted(tree))
        return TreeDef("dict", keys, tuple(_flatten(tree[k], leaves) for k in keys))
    if _is_namedtuple(tree):
        return TreeDef("namedtuple", type(tree), tuple(_flatten(c, leaves) for c in tree))
    if isinstance(tree, (list, tuple)):
        kind = "list" if isinstance(tree, list) else "tuple"
        return TreeDef(kind, None, tuple(_flatten(c, leaves) for c in tree))
    leaves.append(tree)
    return LEAF


def tree_unflatten(treedef: TreeDef, leaves: list[Any]) -> Any:
    it = iter(leaves)
    result = _unflatten(treedef, it)
    if next(it, _END) is not _END:
        raise ValueError("too many leaves for the tree structure")
    return result


_END = object()


def _unflatten(treedef: TreeDef, it) -> Any:
    if treedef.kind == "leaf":
        return next(it)
    if treedef.kind == "none":
        return None
    children = [_unflatten(c, it) for c in treedef.children]
    if treedef.kind == "dict":
        return dict(zip(treedef.meta, children))
    if treedef.kind == "list":
        return children
    if treedef.kind == "namedtuple":
        return treedef.meta(*children)
    return tuple(children)


def tree_map(fn: Callable, tree: Any, *rest: Any) -> Any:
    """Apply `fn` leaf by leaf to one or more trees of the same structure."""
    leaves, treedef = tree_flatten(tree)
    others = [tree_flatten(r)[0] for r in rest]
    return tree_unflatten(treedef, [fn(*xs) for xs in zip(leaves, *others)])


def tree_leaves(tree: Any) -> list[Any]:
    return tree_flatten(tree)[0]


def dict_without(tree: Any, key: Any, prefix: str) -> str | None:
    """The path of the first dict in `tree` that lacks `key` (None: every dict has it)."""
    if isinstance(tree, dict):
        if key not in tree:
            return prefix
        children = [(tree[k], f"{prefix}[{k!r}]") for k in sorted(tree, key=repr)]
    elif isinstance(tree, (list, tuple)):
        children = [(c, f"{prefix}[{i}]") for i, c in enumerate(tree)]
    else:
        return None
    for child, path in children:
        found = dict_without(child, key, path)
        if found is not None:
            return found
    return None


def sub_tree(tree: Any, path: str, prefix: str) -> Any:
    """The subtree of `tree` at `path` (as `dict_without` spells it)."""
    if path == prefix:
        return tree
    for key, child in (tree.items() if isinstance(tree, dict) else enumerate(tree)):
        step = f"{prefix}[{key!r}]" if isinstance(tree, dict) else f"{prefix}[{key}]"
        if path.startswith(step):
            return sub_tree(child, path, step)
    return tree


def describe_tree(tree: Any) -> str:
    """A pytree's structure with each leaf's type: ``{'b': f64[2], 'w': f64[3,2]}``."""
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{k!r}: {describe_tree(tree[k])}" for k in sorted(tree, key=repr)) \
            + "}"
    if isinstance(tree, list):
        return "[" + ", ".join(describe_tree(c) for c in tree) + "]"
    if isinstance(tree, tuple):
        return "(" + "".join(describe_tree(c) + ", " for c in tree) + ")"
    if isinstance(tree, str):
        return tree
    if isinstance(tree, (np.ndarray, np.generic)):
        return str(TensorType(tree.shape, tree.dtype)) if tree.dtype in DTYPES else str(tree.dtype)
    return type(tree).__name__
