"""Public transformations: `grad`, `value_and_grad`, `vjp` and `custom_vjp`.

They are tape-based. Called with tracers (under `compile`, or inside another transformation)
they record the function's forward pass into that same Trace, after aliasing each
differentiated argument leaf to a fresh value, and then run the reverse sweep of
`compiler/autodiff.py` over the nodes recorded since: forward and backward are one graph.
Called eagerly with NumPy arrays they open a fresh Trace, do the same, and evaluate the
result with the reference interpreter (NumPy in, NumPy out). Conventions follow JAX.

>>> import numpy as np
>>> grad(lambda x: np.sum(x * x))(np.array([1.0, 2.0]))
array([2., 4.])
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from compiler import autodiff
from compiler import primitives as F
from compiler.arguments import arg_names, leaf_paths, leaf_spec
from compiler.array_tracer import new_trace
from compiler.autodiff import AutodiffError, CustomVjp
from compiler.numpy_creation import tracing_numpy
from compiler.pytree import tree_flatten, tree_unflatten
from compiler.tracing import Trace, Tracer, innermost_trace, recording
from ir.graph import Graph, Role, Source
from ir.interpreter import evaluate
from ir.types import is_python_scalar, type_of


def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _source(fn: Callable) -> Source | None:
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    return Source(code.co_filename, code.co_firstlineno, code.co_name)


def _is_float_leaf(leaf: Any) -> bool:
    if isinstance(leaf, Tracer):
        return leaf.dtype.kind == "f"
    if isinstance(leaf, float):
        return True
    if isinstance(leaf, (bool, int)) or leaf is None:
        return False
    return np.asarray(leaf).dtype.kind == "f"


def _is_weak(leaf: Any) -> bool:
    """A Python scalar, or a tracer of one: weakly typed, as NumPy treats Python scalars."""
    return is_python_scalar(leaf) or getattr(leaf, "weak", False)


def _current_trace(fn: Callable, args: tuple) -> Trace | None:
    """The trace to record into: the arguments', else one that `fn` closes over (a function
    defined inside a compiled one, called on NumPy arrays), else the innermost trace being
    recorded (a transformation called on constants inside a traced function), else None
    (run eagerly)."""
    trace = F.trace_of(tree_flatten(args)[0])
    if trace is not None:
        return trace
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            leaves = tree_flatten(cell.cell_contents)[0]
        except (ValueError, TypeError):  # an empty cell, or contents that are not a pytree
            continue
        trace = F.trace_of(leaves)
        if trace is not None:
            return trace
    return innermost_trace()  # called on constants inside a trace: record at its level


def _normalize_argnums(fn: Callable, argnums: int | Sequence[int], nargs: int) -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for i in nums:
        if not -nargs <= i < nargs:
            raise AutodiffError(
                f"grad of {_name(fn)} with argnums={argnums}: argument {i} does not exist, "
                f"{_name(fn)} was called with {nargs} positional argument(s)",
                fix="argnums counts positional arguments from 0")
    return tuple(i % nargs for i in nums)


# -- running a transformation eagerly: a fresh trace, then the interpreter ------------------


def _run_eagerly(body: Callable[[Trace, tuple], Any], args: tuple) -> Any:
    """Trace `body(trace, tracer_args)` over fresh inputs for `args` and evaluate its result."""
    leaves, in_tree = tree_flatten(args)
    trace = new_trace()
    tracers = [trace.new_input(leaf_spec(leaf, f"leaf {k}", "").type, is_python_scalar(leaf))
               for k, leaf in enumerate(leaves)]
    with tracing_numpy(), recording(trace):  # np.array([x, y]) of tracers stacks them
        result = body(trace, tree_unflatten(in_tree, tracers))
    return _evaluate_leaves(trace, result, leaves)


def _evaluate_leaves(trace: Trace, result: Any, values: list) -> Any:
    out_leaves, out_tree = tree_flatten(result)
    traced = [leaf for leaf in out_leaves if isinstance(leaf, Tracer) and leaf.trace is trace]
    graph = Graph(list(trace.inputs), list(trace.nodes), [t.ir_var for t in traced])
    computed = iter(evaluate(graph, values))
    evaluated = [
        _unbox(next(computed)) if isinstance(leaf, Tracer) and leaf.trace is trace else leaf
        for leaf in out_leaves
    ]
    return tree_unflatten(out_tree, evaluated)


def _unbox(array: np.ndarray):
    return array[()] if array.ndim == 0 else array


# -- value_and_grad and grad ----------------------------------------------------------------


def _alias_args(trace: Trace, fn: Callable, args: list, argnums: tuple[int, ...],
                names: list[str]) -> list:
    """Replace each differentiated leaf by an alias; returns the aliased Vars in order."""
    wrt = []
    for i in argnums:
        leaves, tree = tree_flatten(args[i])
        new_leaves = []
        for leaf, path in zip(leaves, leaf_paths(args[i], names[i])):
            if not _is_float_leaf(leaf):
                kind = getattr(leaf, "dtype", type(leaf).__name__)
                raise AutodiffError(
                    f"grad of {_name(fn)} with respect to {path}: it is {kind}, and only "
                    "float values have gradients",
                    fix="pass floats (x.astype(np.float32), 2.0 rather than 2) or leave the "
                    "argument out of argnums")
            var = F.to_var(trace, leaf)
            var = autodiff.alias(trace, var, f"grad argument {path}", _source(fn))
            wrt.append(var)
            new_leaves.append(F.wrap(trace, var, _is_weak(leaf)))
        args[i] = tree_unflatten(tree, new_leaves)
    return wrt


def _traced_value_and_grad(trace: Trace, fn: Callable, argnums: tuple[int, ...],
                           has_aux: bool, args: tuple):
    args = list(args)
    wrt = _alias_args(trace, fn, args, argnums, arg_names(fn, len(args)))
    start = len(trace.nodes)
    result = fn(*args)
    aux = None
    if has_aux:
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise AutodiffError(f"{_name(fn)} was differentiated with has_aux=True, so it must "
                                f"return a pair (value, aux), not {type(result).__name__}")
        result, aux = result
    if isinstance(result, Tracer) and result.trace is not trace:
        raise AutodiffError(f"{_name(fn)} returned a traced value from another trace")
    out = F.to_var(trace, result)
    if out.shape != () or out.dtype.kind != "f":
        raise AutodiffError(
            f"grad of {_name(fn)} needs a float scalar output, but {_name(fn)} returned "
            f"{out.type}",
            fix="reduce the output first (.sum() or .mean()), or use vjp(fn, *args) for "
            "a non-scalar output")
    stop = len(trace.nodes)
    with trace.annotate("", _source(fn)):
        seed = trace.constant(np.ones((), out.dtype))
    if len(trace.nodes) > stop:  # a new constant (constants drop notes): say what it is
        trace.nodes[-1] = dataclasses.replace(trace.nodes[-1], note="vjp seed: dout/dout = 1",
                                              role=Role.BACKWARD)
    grads = iter(autodiff.backward_pass(trace, start, stop, {out: seed}, wrt))
    grad_trees = []
    for i in argnums:
        leaves, tree = tree_flatten(args[i])
        grad_trees.append(tree_unflatten(tree, [F.wrap(trace, next(grads), leaf.weak)
                                                for leaf in leaves]))
    value = F.wrap(trace, out, getattr(result, "weak", False))
    return value, aux, grad_trees


def value_and_grad(fn: Callable, argnums: int | Sequence[int] = 0,
                   has_aux: bool = False) -> Callable:
    """A function returning `(fn(*args), gradient)`; with `has_aux=True` `fn` returns
    `(value, aux)` and the result is `((value, aux), gradient)`. A tuple `argnums` gives a
    tuple of gradients, each with its argument's pytree structure.

    >>> import numpy as np
    >>> value, g = value_and_grad(lambda w: np.sum(w ** 3))(np.array([1.0, 2.0]))
    >>> float(value), g
    (9.0, array([ 3., 12.]))
    """

    def value_and_grad_fn(*args):
        nums = _normalize_argnums(fn, argnums, len(args))

        def body(trace: Trace, args: tuple):
            value, aux, grads = _traced_value_and_grad(trace, fn, nums, has_aux, args)
            grads = grads[0] if isinstance(argnums, int) else tuple(grads)
            return ((value, aux), grads) if has_aux else (value, grads)

        trace = _current_trace(fn, args)
        if trace is None:
            return _run_eagerly(body, args)
        return body(trace, args)

    return _transformed(value_and_grad_fn, fn, "value_and_grad")


def grad(fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable:
    """The gradient of a scalar-valued `fn` with respect to argument(s) `argnums`.

    >>> import numpy as np
    >>> grad(lambda x, y: np.sum(x * y), argnums=(0, 1))(np.ones(2), np.arange(2.0))
    (array([0., 1.]), array([1., 1.]))
    """
    inner = value_and_grad(fn, argnums, has_aux)

    def grad_fn(*args):
        if has_aux:
            (_, aux), grads = inner(*args)
            return grads, aux
        return inner(*args)[1]

    return _transformed(grad_fn, fn, "grad")


def _transformed(wrapper: Callable, fn: Callable, kind: str) -> Callable:
    functools.update_wrapper(wrapper, fn)
    del wrapper.__wrapped__  # keep inspect.signature honest: the wrapper takes *args
    wrapper.__name__ = f"{kind}({_name(fn)})"
    wrapper.__qualname__ = wrapper.__name__
    wrapper.__chainjit_wrapped__ = fn  # `Compiled.ir(stage="traced")` shows fn's forward only
    return wrapper


# -- vjp ----------------------------------------------------------------------------------


def vjp(fn: Callable, *primals, has_aux: bool = False):
    """`(fn(*primals), vjp_fn)`: `vjp_fn(cotangent)` returns a tuple with one cotangent per
    primal (same pytree structure; None for integer leaves).

    >>> import numpy as np
    >>> out, vjp_fn = vjp(np.sin, np.zeros(2))
    >>> vjp_fn(np.array([1.0, 2.0]))
    (array([1., 2.]),)
    """
    trace = _current_trace(fn, primals)
    if trace is not None:
        return _traced_vjp(trace, fn, primals, has_aux)
    values = tree_flatten(primals)[0]
    forward = {}

    def body(trace: Trace, args: tuple):
        forward["trace"] = trace
        out, forward["vjp_fn"], *aux = _traced_vjp(trace, fn, args, has_aux)
        return (out, *aux)

    evaluated = _run_eagerly(body, primals)
    trace, traced_vjp_fn = forward["trace"], forward["vjp_fn"]

    def vjp_fn(cotangent):
        saved_nodes, saved_inputs = len(trace.nodes), len(trace.inputs)
        saved_constants = dict(trace.constants)
        ct_leaves, ct_tree = tree_flatten(cotangent)
        ct_tracers = tree_unflatten(ct_tree, [trace.new_input(type_of(c)) for c in ct_leaves])
        try:
            with recording(trace):
                result = traced_vjp_fn(ct_tracers)
            return _evaluate_leaves(trace, result, values + [np.asarray(c) for c in ct_leaves])
        finally:
            del trace.nodes[saved_nodes:]
            del trace.inputs[saved_inputs:]
            trace.constants = saved_constants

    if has_aux:
        out, aux = evaluated
        return out, vjp_fn, aux
    return evaluated[0], vjp_fn


def _traced_vjp(trace: Trace, fn: Callable, primals: tuple, has_aux: bool):
    leaves, in_tree = tree_flatten(primals)
    wrt, new_leaves = [], []
    for k, leaf in enumerate(leaves):
        if _is_float_leaf(leaf):
            var = autodiff.alias(trace, F.to_var(trace, leaf), f"vjp primal {k}", _source(fn))
            wrt.append(var)
            new_leaves.append(F.wrap(trace, var, _is_weak(leaf)))
        else:
            new_leaves.append(leaf)
    start = len(trace.nodes)
    result = fn(*tree_unflatten(in_tree, new_leaves))
    aux = None
    if has_aux:
        result, aux = result
    out_leaves, out_tree = tree_flatten(result)
    out_vars = [F.to_var(trace, leaf) for leaf in out_leaves]
    stop = len(trace.nodes)

    def vjp_fn(cotangent):
        ct_leaves, ct_tree = tree_flatten(cotangent)
        if ct_tree != out_tree:
            raise AutodiffError(f"the cotangent for {_name(fn)} must have the structure of its "
                                f"output, {out_tree}, not {ct_tree}")
        seeds: dict = {}
        with trace.annotate(f"vjp seed of {_name(fn)}", _source(fn), Role.BACKWARD):
            for var, ct in zip(out_vars, ct_leaves):
                ct_var = F.to_var(trace, ct, var.dtype)
                if ct_var.shape != var.shape:
                    raise AutodiffError(f"cotangent {ct_var.type} does not match the output "
                                        f"{var.type} of {_name(fn)}")
                if var in seeds:
                    ct_var = F.add(F.wrap(trace, seeds[var]), F.wrap(trace, ct_var)).ir_var
                seeds[var] = ct_var
        grads = iter(autodiff.backward_pass(trace, start, stop, seeds, wrt))
        return tuple(tree_unflatten(in_tree, [
            F.wrap(trace, next(grads)) if _is_float_leaf(leaf) else None for leaf in leaves
        ]))

    outs = tree_unflatten(out_tree, [
        leaf if isinstance(leaf, Tracer) else F.wrap(trace, var)
        for leaf, var in zip(out_leaves, out_vars)])
    if has_aux:
        return outs, vjp_fn, aux
    return outs, vjp_fn


# -- custom_vjp ------------------------------------------------------------------------------


class custom_vjp:  # lower case, like the JAX decorator users know
    """A function with its own VJP rule, as in JAX:

    >>> import numpy as np
    >>> @custom_vjp
    ... def clip_gradient(x):
    ...     return x
    >>> clip_gradient.defvjp(lambda x: (x, None), lambda res, g: (np.clip(g, -1, 1),))
    >>> grad(lambda x: np.sum(3.0 * clip_gradient(x)))(np.zeros(2))
    array([1., 1.])

    `fwd(*args)` returns `(out, residuals)`; `bwd(residuals, g)` returns a tuple with one
    cotangent (or None) per argument. Called on NumPy arrays outside any transformation, the
    function simply runs.
    """

    def __init__(self, fn: Callable):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.fwd: Callable | None = None
        self.bwd: Callable | None = None

    def defvjp(self, fwd: Callable, bwd: Callable) -> None:
        self.fwd, self.bwd = fwd, bwd

    def __call__(self, *args):
        leaves, _ = tree_flatten(args)
        trace = F.trace_of(leaves)
        if trace is None:
            return self.fn(*args)
        if self.fwd is None:
            raise AutodiffError(f"custom_vjp {_name(self.fn)} has no rule yet",
                                fix=f"call {_name(self.fn)}.defvjp(fwd, bwd) first")
        out, residuals = self.fwd(*args)
        out_leaves, out_tree = tree_flatten(out)
        outputs: list = []
        alias_nodes = []
        for leaf in out_leaves:
            if not _is_float_leaf(leaf):
                outputs.append(None)
                continue
            var = F.to_var(trace, leaf)
            outputs.append(autodiff.alias(trace, var, f"custom_vjp {_name(self.fn)} output",
                                          _source(self.fn)))
            alias_nodes.append(trace.nodes[-1])
        record = CustomVjp(
            name=_name(self.fn),
            inputs=[leaf.ir_var if isinstance(leaf, Tracer) else None for leaf in leaves],
            leaf_counts=[len(tree_flatten(a)[0]) for a in args],
            outputs=outputs, out_tree=out_tree, residuals=residuals, bwd=self.bwd,
        )
        for node in alias_nodes:
            trace.custom_vjps[node] = record
        return tree_unflatten(out_tree, [
            F.wrap(trace, var) if var is not None else leaf
            for leaf, var in zip(out_leaves, outputs)])
