"""Reverse-mode autodiff: the reverse sweep over the nodes a Trace recorded (a tape).

The transformations in `compiler/transforms.py` record a function's forward pass into the
current Trace, then call `backward_pass` over the nodes recorded since. It walks them in
reverse, calling each op's rule from `VJP_RULES`; the rules emit the backward nodes into the
same Trace with the primitives, with `Role.BACKWARD`, the forward node's source line and a
note for humans, ``vjp <op>[<input>] of <var>: <maths>``. So forward and backward end up in
one graph (the "joint" graph), and the backward is ordinary IR that can be differentiated
again.

Cotangents are kept per value; a missing entry is a symbolic zero, so values with no path to
the output, and inputs of a node that do not depend on the differentiated arguments, cost no
work. Integer and bool values get no gradient. An argument with no path to the output gets
zeros at the end (a broadcast 0-d constant).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from compiler import primitives as F
from compiler.cotangents import AutodiffError, accumulate, zeros
from compiler.errors import UnsupportedError
from compiler.loops_vjp import loop_backward
from compiler.pytree import TreeDef, tree_flatten, tree_unflatten
from compiler.tracing import Trace, Tracer
from compiler.vjp_rules import NON_DIFFERENTIABLE, VJP_RULES, vjp_maths
from ir.graph import Node, Role, Source, Var
from ir.ops import LOOPS, Op


@dataclass(eq=False)
class CustomVjp:
    """One call of a `custom_vjp` function: its rule replaces the rules of what fwd recorded."""

    name: str
    inputs: list[Var | None]  # flattened argument leaves (None: not a traced value)
    leaf_counts: list[int]  # how many of `inputs` each argument holds
    outputs: list[Var | None]  # aliases of fwd's float output leaves (their nodes carry this)
    out_tree: TreeDef
    residuals: Any
    bwd: Callable


def is_differentiable(var: Var) -> bool:
    return var.dtype.kind == "f"


def alias(trace: Trace, var: Var, note: str, source: Source | None) -> Var:
    """A fresh Var equal to `var` (a same-shape RESHAPE), so a differentiated argument has a
    position of its own even when the same value is also used elsewhere (closures, or the
    same array passed twice)."""
    with trace.annotate(note, source):
        (out,) = trace.emit(Op.RESHAPE, (var,), {"shape": var.shape})
    return out


def backward_pass(trace: Trace, start: int, stop: int, seeds: dict[Var, Var],
                  wrt: Sequence[Var]) -> list[Var]:
    """Cotangents of `wrt` given output cotangents `seeds`, by a reverse sweep over
    `trace.nodes[start:stop]`; the backward nodes are appended to the trace."""
    tape = trace.nodes[start:stop]
    active = _active_values(tape, wrt, trace.custom_vjps)
    cts: dict[Var, Var] = {}
    for var, seed in seeds.items():
        if var in active:
            accumulate(trace, cts, var, seed, None)
    handled: set[int] = set()
    for node in reversed(tape):
        custom = trace.custom_vjps.get(node)
        if custom is not None:
            if id(custom) not in handled:
                handled.add(id(custom))
                _custom_backward(trace, custom, cts, active, node.source)
            continue
        grads = [cts.pop(v, None) for v in node.outputs]
        if all(g is None for g in grads):
            continue
        if node.op in LOOPS:  # compiler/loops_vjp.py: a reverse scan over the body's VJP
            loop_backward(trace, node, grads, cts, active, backward_pass)
            continue
        if node.op in (Op.FUSED, Op.GEMM):
            raise UnsupportedError("autodiff runs on the traced graph, before fusion: a "
                                   f"{node.op.value} node cannot be differentiated", node.source)
        _node_backward(trace, node, grads[0], cts, active)
    results = []
    for var in wrt:
        if var in cts:
            results.append(cts[var])
            continue
        with trace.annotate(f"zero gradient: no path from %{var.id} to the output",
                            role=Role.BACKWARD):
            results.append(zeros(trace, var).ir_var)
    return results


def _active_values(tape: Sequence[Node], wrt: Sequence[Var],
                   custom_vjps: dict[Node, CustomVjp]) -> set[Var]:
    """Values that depend, through differentiable nodes, on the differentiated arguments."""
    active = {v for v in wrt if is_differentiable(v)}
    for node in tape:
        custom = custom_vjps.get(node)
        if custom is not None:
            depends = any(v in active for v in custom.inputs if v is not None)
        else:
            depends = node.op not in NON_DIFFERENTIABLE and any(v in active for v in node.inputs)
        if depends:
            active.update(v for v in node.outputs if is_differentiable(v))
    return active


def _node_backward(trace: Trace, node: Node, g: Var, cts: dict[Var, Var],
                   active: set[Var]) -> None:
    needed = [v in active for v in node.inputs]
    if not any(needed):
        return
    rule = VJP_RULES.get(node.op)
    if rule is None:
        raise UnsupportedError(f"no VJP rule for {node.op.value}", node.source)
    first = len(trace.nodes)
    wrap = lambda v: F.wrap(trace, v)
    out = node.outputs[0]  # (all_reduce of several parts: its rule raises)
    with trace.annotate(f"vjp {node.op.value} of %{out.id}", node.source, Role.BACKWARD):
        results = rule(wrap(g), wrap(out), *map(wrap, node.inputs), **node.params)
        kept: dict[int, Var] = {}
        for i, result in enumerate(results):
            if needed[i] and result is not None:
                kept[i] = result.ir_var if isinstance(result, Tracer) else F.to_var(trace, result)
    _prune_and_label(trace, first, node, kept)
    for i, ct in kept.items():
        accumulate(trace, cts, node.inputs[i], ct, node.source)


def _prune_and_label(trace: Trace, first: int, node: Node, kept: dict[int, Var]) -> None:
    """Drop what a rule emitted for inputs that need no gradient (symbolic zeros cost
    nothing), and label each remaining node with the input and the maths it serves."""
    emitted = trace.nodes[first:]
    users: dict[int, set[int]] = {id(n): set() for n in emitted}
    producer = {v: n for n in emitted for v in n.outputs}
    for i, ct in kept.items():
        stack = [ct]
        while stack:
            made_by = producer.get(stack.pop())
            if made_by is not None and i not in users[id(made_by)]:
                users[id(made_by)].add(i)
                stack.extend(made_by.inputs)
    maths = vjp_maths(node.op)
    many = len(node.inputs) > 1
    new_nodes = []
    for n in emitted:
        serves = users[id(n)]
        if not serves:
            continue
        if n.op is not Op.CONSTANT:
            (i,) = serves if len(serves) == 1 else (None,)
            n = dataclasses.replace(n, note=_note(node, i, maths, many))
        new_nodes.append(n)
    dropped = {v for n in emitted if not users[id(n)] for v in n.outputs}
    trace.nodes[first:] = new_nodes
    for key in [k for k, v in trace.constants.items() if v in dropped]:
        del trace.constants[key]


def _note(node: Node, i: int | None, maths: tuple[str, ...], many: bool) -> str:
    where = f"{node.op.value}[{i}]" if many and i is not None else node.op.value
    if i is not None and len(maths) == len(node.inputs):
        text = maths[i]
    else:
        text = ", ".join(maths)
    return f"vjp {where} of %{node.out.id}: {text}" if text else f"vjp {where} of %{node.out.id}"


def _custom_backward(trace: Trace, custom: CustomVjp, cts: dict[Var, Var], active: set[Var],
                     source: Source | None) -> None:
    grads = [cts.pop(v, None) if v is not None else None for v in custom.outputs]
    if all(g is None for g in grads):
        return
    with trace.annotate(f"vjp custom_vjp {custom.name}", source, Role.BACKWARD):
        g_leaves = [
            None if v is None
            else F.wrap(trace, g) if g is not None
            else zeros(trace, v)
            for g, v in zip(grads, custom.outputs)
        ]
        results = custom.bwd(custom.residuals, tree_unflatten(custom.out_tree, g_leaves))
        if not isinstance(results, (tuple, list)):
            raise AutodiffError(f"the bwd rule of custom_vjp {custom.name} must return a tuple "
                                f"with one cotangent per argument, got {type(results).__name__}")
        if len(results) != len(custom.leaf_counts):
            raise AutodiffError(
                f"the bwd rule of custom_vjp {custom.name} returned {len(results)} cotangents "
                f"for {len(custom.leaf_counts)} arguments")
        leaves: list[Any] = []
        for result, count in zip(results, custom.leaf_counts):
            flat = [None] * count if result is None else tree_flatten(result)[0]
            if len(flat) != count:
                raise AutodiffError(
                    f"the bwd rule of custom_vjp {custom.name} returned a cotangent whose "
                    f"structure differs from its argument's ({len(flat)} leaves, not {count})")
            leaves.extend(flat)
        for var, ct in zip(custom.inputs, leaves):
            if var is None or ct is None or var not in active:
                continue
            ct_var = F.to_var(trace, F.broadcast_to(ct, var.shape))
            accumulate(trace, cts, var, ct_var, source)
