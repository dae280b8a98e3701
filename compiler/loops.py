"""Structured loops: `scan`, `fori_loop` and `while_loop`, with JAX's names and semantics.

Under a trace, each records ONE node whose body is a sub-graph traced once (a SCAN or a
WHILE node, ir/ops.py), however many steps it runs, so the graph, the compile and the memory
for code do not grow with the number of steps. The body is traced in a trace of its own
(`Trace(parent=...)`): values of the enclosing function it uses (parameters it closes over)
are captured as inputs of the body, so gradients flow to them. Undecorated, on NumPy arrays,
each is a plain Python loop: the reference to debug against.

>>> import numpy as np
>>> from compiler import scan
>>> carry, ys = scan(lambda c, x: (c + x, c + x), 0.0, np.arange(4.0))  # running sums
>>> float(carry), ys.tolist()
(6.0, [0.0, 1.0, 3.0, 6.0])

Reverse mode (compiler/loops_vjp.py): the backward of a scan is a reverse scan over the
body's VJP; `fori_loop` is a scan and differentiable; `while_loop` is forward only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from compiler import primitives as F
from compiler.errors import ShapeMismatchError, TraceError, user_source
from compiler.pytree import TreeDef, tree_flatten, tree_map, tree_unflatten
from compiler.tracing import Trace, Tracer, innermost_trace, recording
from ir.graph import Graph, Var
from ir.ops import Op
from ir.types import TensorType


class LoopError(TraceError, ValueError):
    """A loop body whose carry changes structure, shape or dtype, or bad loop arguments."""


def scan(f: Callable, init: Any, xs: Any = None, length: int | None = None,
         reverse: bool = False, checkpoint: int | None = None) -> tuple[Any, Any]:
    """Loop `carry, y = f(carry, x)` over the leading axis of `xs`: `(final carry, ys)`.

    `xs` is a pytree of arrays with one leading length (or None, with `length`); `ys` are
    `f`'s second results stacked on a new leading axis. The carry (a pytree) must keep its
    structure, shapes and dtypes. `reverse=True` runs from the last step to the first (ys
    stay in the order of xs). `checkpoint=k` (under reverse mode) keeps only every k-th
    carry for the backward and recomputes the steps between: less memory, more time.

    >>> import numpy as np
    >>> scan(lambda c, x: (c * 2, c), np.float32(1), None, length=3)[1].tolist()
    [1.0, 2.0, 4.0]
    """
    x_leaves, x_tree = tree_flatten(xs)
    init_leaves, init_tree = tree_flatten(init)
    length = _scan_length(x_leaves, length)
    if checkpoint is not None and (not isinstance(checkpoint, int) or checkpoint < 1):
        raise LoopError(f"scan checkpoint must be a positive int, got {checkpoint!r}")
    trace = F.trace_of(init_leaves + x_leaves) or innermost_trace()
    if trace is None:
        return _scan_eagerly(f, init, xs, length, reverse)
    if checkpoint is not None and 1 < checkpoint < length:
        return _scan_checkpointed(f, init, xs, length, reverse, checkpoint)
    return _scan_traced(trace, f, init_leaves, init_tree, x_leaves, x_tree, length, reverse)


def fori_loop(lower: int, upper: int, body_fun: Callable, init_val: Any) -> Any:
    """`val = body_fun(i, val)` for i in range(lower, upper); differentiable (it is a scan).

    >>> fori_loop(0, 4, lambda i, v: v + i, 0)
    6
    """
    for name, bound in (("lower", lower), ("upper", upper)):
        if isinstance(bound, Tracer) or not isinstance(bound, (int, np.integer)):
            raise LoopError(
                f"fori_loop needs Python int bounds, got {name}={bound!r}",
                fix="pass the bounds as Python ints (static_argnums for an argument), or use "
                    "while_loop for a bound known only at run time (forward only)")
    lower, upper = int(lower), int(upper)
    leaves, _ = tree_flatten(init_val)
    if F.trace_of(leaves) is None and innermost_trace() is None:
        val = init_val
        for i in range(lower, upper):
            val = body_fun(i, val)
        return val
    steps = np.arange(lower, max(upper, lower), dtype=np.int64)
    val, _ = scan(lambda v, i: (body_fun(i, v), None), init_val, steps)
    return val


def while_loop(cond_fun: Callable, body_fun: Callable, init_val: Any) -> Any:
    """`while cond_fun(val): val = body_fun(val)`. Forward only: reverse mode through it is
    an error (use `fori_loop` or `scan` with a bound).

    >>> while_loop(lambda v: v < 10, lambda v: v * 2, 1)
    16
    """
    leaves, tree = tree_flatten(init_val)
    trace = F.trace_of(leaves) or innermost_trace()
    if trace is None:
        val = init_val
        while bool(cond_fun(val)):
            val = body_fun(val)
            _check_carry(tree, leaves, val, "while_loop body_fun")
        return val
    init_vars = [F.to_var(trace, leaf) for leaf in leaves]
    weak = [getattr(leaf, "weak", False) for leaf in leaves]
    cond, cond_consts, _ = _trace_body(trace, lambda *c: (cond_fun(tree_unflatten(tree, c)),),
                                       init_vars, weak, [])
    (flag,) = cond.outputs
    if flag.type != TensorType((), np.dtype(np.bool_)):
        raise LoopError(f"while_loop cond_fun must return a bool scalar, got {flag.type}",
                        fix="return a comparison such as `i < n` (np.any/np.all for arrays)")

    def step(*carry):
        out = body_fun(tree_unflatten(tree, carry))
        _check_carry(tree, [Var(v.type) for v in init_vars], out, "while_loop body_fun")
        return tuple(tree_flatten(out)[0])

    body, body_consts, _ = _trace_body(trace, step, init_vars, weak, [])
    outs = trace.emit(Op.WHILE, [*cond_consts, *body_consts, *init_vars],
                      {"cond": cond, "body": body, "num_cond_consts": len(cond_consts)})
    return tree_unflatten(tree, [F.wrap(trace, v, w) for v, w in zip(outs, weak)])


# -- scan, traced and eager ------------------------------------------------------------------


def _scan_length(x_leaves: list, length: int | None) -> int:
    lengths = {int(np.shape(x)[0]) if np.ndim(x) else None for x in x_leaves}
    if None in lengths:
        raise LoopError("scan xs must be arrays with a leading axis to scan over; one is 0-d",
                        fix="pass xs=None with length=n to loop without inputs")
    if length is not None:
        lengths.add(int(length))
    if not lengths:
        raise LoopError("scan needs xs or a length", fix="pass length=n when xs is None")
    if len(lengths) > 1:
        raise LoopError(f"scan xs (and length) disagree on the number of steps: "
                        f"{sorted(lengths)}", fix="give every xs leaf the same leading axis")
    return lengths.pop()


def _scan_eagerly(f: Callable, init: Any, xs: Any, length: int, reverse: bool):
    init_leaves, init_tree = tree_flatten(init)
    x_leaves, x_tree = tree_flatten(xs)
    carry, ys = init, []
    for t in (range(length - 1, -1, -1) if reverse else range(length)):
        x = tree_unflatten(x_tree, [leaf[t] for leaf in x_leaves])
        carry, y = _pair(f(carry, x))
        _check_carry(init_tree, init_leaves, carry, "scan f")
        ys.append(y)
    if reverse:
        ys.reverse()
    if not ys:
        return carry, None
    y_leaves = [tree_flatten(y)[0] for y in ys]
    y_tree = tree_flatten(ys[0])[1]
    stacked = [np.stack([np.asarray(step[k]) for step in y_leaves])
               for k in range(len(y_leaves[0]))]
    return carry, tree_unflatten(y_tree, stacked)


def _scan_checkpointed(f: Callable, init: Any, xs: Any, length: int, reverse: bool, k: int):
    """A scan of chunks of k steps, each a scan (and a scan of the steps left over): reverse
    mode then saves the carry once per chunk, and the backward of each chunk recomputes its
    k carries from it (compiler/loops_vjp.py), so memory goes from L carries to L/k + k."""
    chunks, main = length // k, length // k * k
    rest = length - main
    head = tree_map(lambda a: a[:main].reshape(chunks, k, *a.shape[1:]), xs)
    tail = tree_map(lambda a: a[main:], xs)

    def chunk(carry, x):
        return scan(f, carry, x, length=k, reverse=reverse)

    def run_tail(carry):
        return scan(f, carry, tail, length=rest, reverse=reverse) if rest else (carry, None)

    if reverse:  # the last steps run first
        carry, ys_tail = run_tail(init)
        carry, ys = scan(chunk, carry, head, length=chunks, reverse=True)
    else:
        carry, ys = scan(chunk, init, head, length=chunks)
        carry, ys_tail = run_tail(carry)
    ys = tree_map(lambda y: y.reshape(main, *y.shape[2:]), ys)
    if ys_tail is not None:
        ys = tree_map(lambda y, t: np.concatenate([y, t]), ys, ys_tail)
    return carry, ys


def _scan_traced(trace: Trace, f: Callable, init_leaves: list, init_tree: TreeDef,
                 x_leaves: list, x_tree: TreeDef, length: int, reverse: bool):
    init_vars = [F.to_var(trace, leaf) for leaf in init_leaves]
    x_vars = [F.to_var(trace, leaf) for leaf in x_leaves]
    weak = [getattr(leaf, "weak", False) for leaf in init_leaves]
    y_tree: list[TreeDef] = []

    def step(*leaves):
        carry = tree_unflatten(init_tree, leaves[:len(init_vars)])
        x = tree_unflatten(x_tree, leaves[len(init_vars):])
        new_carry, y = _pair(f(carry, x))
        _check_carry(init_tree, [Var(v.type) for v in init_vars], new_carry, "scan f")
        y_leaves, tree = tree_flatten(y)
        y_tree.append(tree)
        return (*tree_flatten(new_carry)[0], *y_leaves)

    x_types = [TensorType(v.shape[1:], v.dtype) for v in x_vars]
    body, consts, _ = _trace_body(trace, step, init_vars, weak, x_types)
    params = {"body": body, "num_consts": len(consts), "num_carry": len(init_vars),
              "length": length, "reverse": bool(reverse)}
    outs = trace.emit(Op.SCAN, [*consts, *init_vars, *x_vars], params)
    carry = [F.wrap(trace, v, w) for v, w in zip(outs, weak)]
    ys = [F.wrap(trace, v) for v in outs[len(init_vars):]]
    return tree_unflatten(init_tree, carry), tree_unflatten(y_tree[0], ys)


def _trace_body(trace: Trace, fn: Callable, carry: list[Var], weak: list[bool],
                x_types: list[TensorType]) -> tuple[Graph, list[Var], list[Var]]:
    """Trace `fn(*carry tracers, *x tracers)` (a tuple of leaves) as a body: (its graph, the
    enclosing values it captured, in the graph's input order, its outputs)."""
    body = Trace(parent=trace)
    tracers = [body.new_input(v.type, w) for v, w in zip(carry, weak)]
    tracers += [body.new_input(t) for t in x_types]
    with recording(body):
        results = fn(*tracers)
    outputs = [body.lift(F.to_var(body, r)) for r in results]
    consts = list(body.captured)
    graph = Graph([body.captured[v] for v in consts] + list(body.inputs), list(body.nodes),
                  outputs)
    return graph, consts, outputs


def _pair(result: Any) -> tuple[Any, Any]:
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise LoopError(f"scan f must return a pair (carry, y), got {type(result).__name__}",
                        fix="return (new_carry, y); use None for y when nothing is stacked")
    return result[0], result[1]


def _leaf_type(leaf: Any) -> TensorType:
    if isinstance(leaf, (Tracer, Var)):
        return TensorType(leaf.shape, leaf.dtype)
    value = np.asarray(leaf)
    return TensorType(value.shape, value.dtype)


def _check_carry(tree: TreeDef, init_leaves: list, new: Any, what: str) -> None:
    """The carry `what` returned must match the initial carry leaf by leaf."""
    from compiler.api import leaf_paths

    leaves, new_tree = tree_flatten(new)
    if new_tree != tree:
        raise ShapeMismatchError(
            f"{what} returned a carry of structure {new_tree}, the initial carry is {tree}",
            user_source(), fix="return the carry with the same structure as init")
    example = tree_unflatten(tree, [0] * len(init_leaves))
    for path, old, leaf in zip(leaf_paths(example, "carry"), init_leaves, leaves):
        before, after = _leaf_type(old), _leaf_type(leaf)
        if before != after:
            raise ShapeMismatchError(
                f"{what} changed the carry leaf {path} from {before} to {after}",
                user_source(), fix="keep each carry leaf's shape and dtype: cast with "
                "astype(...) or initialise the carry with the shape and dtype the body gives")
