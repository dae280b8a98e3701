"""Saving and loading parameters and optimiser state as one `.npz` file, so training resumes.

Each array is stored under its pytree path (``params/w1``, ``state/m/w1``, ``state/count``)
so the file is readable with plain `np.load`; the tree's structure (dicts, lists, tuples) is
stored beside them as JSON under ``__tree__``. `load` rebuilds the trees; `restore` copies
the values into existing arrays in place (the arrays a `train_step` updates).

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
>>> save(path, {"w": np.ones(2, np.float32), "layers": [np.zeros(1)]})
>>> params, state = load(path)
>>> params["w"], params["layers"], state
(array([1., 1.], dtype=float32), [array([0.])], None)
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from compiler.pytree import TreeDef, tree_flatten, tree_unflatten

TREE_KEY = "__tree__"


class CheckpointMismatchError(ValueError):
    """A checkpoint whose arrays do not fit the trees they are restored into."""


def _tree_to_json(tree: TreeDef) -> Any:
    if tree.kind == "leaf":
        return "*"
    if tree.kind == "none":
        return None
    children = [_tree_to_json(c) for c in tree.children]
    if tree.kind == "dict":
        return {"dict": [[k, c] for k, c in zip(tree.meta, children)]}
    return {"list" if tree.kind == "list" else "tuple": children}  # namedtuples become tuples


def _tree_from_json(data: Any) -> TreeDef:
    if data == "*":
        return TreeDef("leaf")
    if data is None:
        return TreeDef("none")
    if "dict" in data:
        keys = tuple(k for k, _ in data["dict"])
        return TreeDef("dict", keys, tuple(_tree_from_json(c) for _, c in data["dict"]))
    kind = "list" if "list" in data else "tuple"
    return TreeDef(kind, None, tuple(_tree_from_json(c) for c in data[kind]))


def _paths(tree: TreeDef, prefix: str) -> list[str]:
    if tree.kind == "leaf":
        return [prefix]
    if tree.kind == "none":
        return []
    names = tree.meta if tree.kind == "dict" else range(len(tree.children))
    return [p for name, c in zip(names, tree.children) for p in _paths(c, f"{prefix}/{name}")]


def save(path: str | os.PathLike, params: Any, state: Any = None) -> None:
    """Write `params` (and an optimiser `state`, for example `step.state`) to `path`."""
    leaves, tree = tree_flatten({"params": params, "state": state})
    arrays = dict(zip(_paths(tree, ""), (np.asarray(x) for x in leaves)))
    arrays = {key.lstrip("/"): value for key, value in arrays.items()}
    arrays[TREE_KEY] = np.array(json.dumps(_tree_to_json(tree)))
    tmp = f"{os.fspath(path)}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # a crash mid-save leaves the previous checkpoint intact


def load(path: str | os.PathLike) -> tuple[Any, Any]:
    """(params, state) as saved; state is None if none was saved."""
    with np.load(path, allow_pickle=False) as data:
        tree = _tree_from_json(json.loads(str(data[TREE_KEY])))
        leaves = [data[key.lstrip("/")] for key in _paths(tree, "")]
    both = tree_unflatten(tree, leaves)
    return both["params"], both["state"]


def restore(path: str | os.PathLike, params: Any, state: Any = None) -> None:
    """Copy a checkpoint's values into the existing arrays of `params` (and `state`)."""
    saved_params, saved_state = load(path)
    pairs = [("params", params, saved_params)]
    if state is not None:
        if saved_state is None:
            raise CheckpointMismatchError(f"{path} holds no optimiser state to restore")
        pairs.append(("state", state, saved_state))
    for name, target, saved in pairs:
        t_leaves, t_tree = tree_flatten(target)
        s_leaves, s_tree = tree_flatten(saved)
        if t_tree != s_tree:
            raise CheckpointMismatchError(
                f"{path}: the saved {name} have structure {s_tree}, the given {name} {t_tree}")
        for key, t, s in zip(_paths(t_tree, name), t_leaves, s_leaves):
            if not isinstance(t, np.ndarray) or t.shape != s.shape:
                raise CheckpointMismatchError(
                    f"{path}: {key} is saved with shape {s.shape}, but the target is "
                    f"{getattr(t, 'shape', type(t).__name__)}")
            np.copyto(t, s, casting="same_kind")
