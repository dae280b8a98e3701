"""Reverse mode through loops: the backward of a SCAN node is a reverse SCAN over its body's VJP.

compiler/autodiff.py calls `loop_backward` when its reverse sweep reaches a loop node. For a
scan over L steps, `carry' , y = body(consts, carry, x)`:

- Residuals: the backward body is the step's forward recomputed from (consts, carry_t, x_t)
  followed by the body's VJP. The forward scan is widened to stack, per step, the carry the
  step starts from and the results of the step's expensive nodes the VJP reads (matmuls,
  reductions, gathers, library calls and inner loops whose inputs vary with the step); the
  backward reads those instead of recomputing them, so only elementwise work is recomputed,
  inside the kernels the VJP's elementwise work fuses into anyway. That is the min-cut's
  rule for straight-line code (passes/remat.py: cheap elementwise values are recomputed
  where holding them costs more) applied at the loop boundary, where holding means a stack of
  L copies. Values depending on the consts only (a weight's transpose) are left in the
  backward body. With `checkpoint=k` only every k-th carry is kept: the backward runs over
  chunks of k steps, each chunk recomputing its k carries with an inner forward scan from the
  saved one, then its reverse scan (memory L/k + k carries instead of L).
- The backward scan runs in the opposite direction. Its carry is the cotangent of the carry
  plus one accumulator per differentiated closed-over value (parameters: their cotangents
  summed over the steps); it scans over xs, the saved carries and the ys' cotangents, and
  stacks the cotangents of xs. It is ordinary IR, so grad of grad differentiates it again.

WHILE has no reverse mode: its trip count is unknown, so nothing bounds what to save.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from compiler import primitives as F
from compiler.cotangents import AutodiffError, accumulate, zeros
from compiler.passes.dce import eliminate_dead_code
from compiler.tracing import Trace
from ir import ops
from ir.graph import Graph, Node, Var
from ir.ops import Op
from ir.types import TensorType


def loop_backward(trace: Trace, node: Node, grads: list[Var | None], cts: dict,
                  active: set[Var], backward_pass: Callable) -> None:
    """Emit the backward of a loop node and accumulate its inputs' cotangents into `cts`.
    `backward_pass` is autodiff's reverse sweep (compiler/autodiff.py), run on the body."""
    if node.op is Op.WHILE:
        raise AutodiffError(
            "reverse-mode differentiation through while_loop is not supported: its number of "
            "steps is known only when it runs, so there is no bound on what to save",
            node.source,
            fix="use fori_loop(lower, upper, ...) with Python int bounds, or scan(f, init, xs, "
                "length=n) with a bound (stop early inside the body with np.where)")
    if not any(v in active for v in node.inputs):
        return
    _scan_backward(trace, node, grads, cts, active, backward_pass)


def _split(node: Node):
    p = node.params
    nc, nk = p["num_consts"], p["num_carry"]
    return node.inputs[:nc], node.inputs[nc:nc + nk], node.inputs[nc + nk:]


def _is_float(var: Var) -> bool:
    return var.dtype.kind == "f"


def _save(trace: Trace, node: Node, extra: list[Var]) -> tuple[Node, list[Var]]:
    """The forward scan widened to stack, per step, the carry it starts from and the body
    values `extra` (residuals): the new node (put in the trace in place of `node`) and the
    stacked values, carries first."""
    body = node.params["body"]
    nc, nk = node.params["num_consts"], node.params["num_carry"]
    outputs, body_outs, saved = list(node.outputs), list(body.outputs), []
    for var in [*body.inputs[nc:nc + nk], *extra]:
        if var in body_outs[nk:]:  # already saved (a second differentiation)
            saved.append(outputs[body_outs.index(var, nk)])
            continue
        body_outs.append(var)
        outputs.append(Var(TensorType((node.params["length"], *var.shape), var.dtype)))
        saved.append(outputs[-1])
    if len(outputs) == len(node.outputs):
        return node, saved
    new_body = Graph(list(body.inputs), list(body.nodes), body_outs)
    widened = dataclasses.replace(node, outputs=tuple(outputs),
                                  params={**node.params, "body": new_body})
    index = next(k for k, n in enumerate(trace.nodes) if n is node)
    trace.nodes[index] = widened
    if trace.parent is not None:  # a body's own values (not captured from outside)
        trace.local.update(widened.outputs)
    return widened, saved


_VAR_REF = re.compile(r"%\d+")  # a value named in a node's note (ir/printer.py)
# What the backward reads from the forward step rather than recomputing it.
EXPENSIVE = ops.CONTRACTION | ops.REDUCTION | ops.INDEXING | ops.LIBRARY | ops.LOOPS


def _step_varying(graph: Graph, first: int) -> set[Var]:
    """Values of `graph` that depend on its inputs from `first` on (the carry and x)."""
    varying = set(graph.inputs[first:])
    for n in graph.nodes:
        if any(v in varying for v in n.inputs):
            varying.update(n.outputs)
    return varying


def _scan_backward(trace: Trace, node: Node, grads: list, cts: dict, active: set,
                   backward_pass: Callable) -> None:
    consts, init, xs = _split(node)
    params = node.params
    nk = params["num_carry"]
    float_carry = [j for j, v in enumerate(init) if _is_float(v)]
    want_consts = [i for i, v in enumerate(consts) if v in active and _is_float(v)]
    want_xs = [i for i, v in enumerate(xs) if v in active and _is_float(v)]
    y_grads = [(k, g) for k, g in enumerate(grads[nk:]) if g is not None]
    source = node.source
    with trace.annotate(f"vjp scan of %{node.outputs[0].id if node.outputs else 0}", source):
        g_carry = [grads[j] if grads[j] is not None else zeros(trace, init[j]).ir_var
                   for j in float_carry]
        g_acc = [zeros(trace, consts[i]).ir_var for i in want_consts]
        body, residuals = _vjp_body(trace, node, float_carry, want_consts, want_xs,
                                    [k for k, _ in y_grads], backward_pass)
        node, saved = _save(trace, node, [fwd for _, fwd in residuals])
        # the backward reads each residual as a per-step input instead of recomputing it
        read = {inner: Var(inner.type) for inner, _ in residuals}
        renamed = {f"%{inner.id}": f"%{v.id}" for inner, v in read.items()}  # notes name it
        nodes = [dataclasses.replace(n, inputs=tuple(read.get(v, v) for v in n.inputs),
                                     note=_VAR_REF.sub(lambda m: renamed.get(m[0], m[0]),
                                                       n.note))
                 for n in body.nodes]
        seqs = [*xs, *saved[:nk], *(g for _, g in y_grads), *saved[nk:]]
        b_consts = list(body.captured)
        graph = eliminate_dead_code(Graph(  # the recomputations the residuals replace
            [body.captured[v] for v in b_consts] + list(body.inputs) + list(read.values()),
            nodes, [read.get(v, v) for v in body.outputs]))
        scan_params = {"body": graph, "num_consts": len(b_consts),
                       "num_carry": len(g_carry) + len(g_acc), "length": params["length"],
                       "reverse": not params["reverse"]}
        outs = trace.emit(Op.SCAN, [*b_consts, *g_carry, *g_acc, *seqs], scan_params)
    n_carry = len(g_carry)
    for slot, j in enumerate(float_carry):
        if init[j] in active:
            accumulate(trace, cts, init[j], outs[slot], source)
    for slot, i in enumerate(want_consts):
        accumulate(trace, cts, consts[i], outs[n_carry + slot], source)
    for slot, i in enumerate(want_xs):
        accumulate(trace, cts, xs[i], outs[n_carry + len(g_acc) + slot], source)


def _vjp_body(trace: Trace, node: Node, float_carry: list[int], want_consts: list[int],
              want_xs: list[int], y_with_grads: list[int],
              backward_pass: Callable) -> tuple[Trace, list]:
    """The backward step as a body trace: carry (cotangents of the float carries, then the
    closed-over values' accumulators), per-step inputs (x_t, carry_t, the ys' cotangents);
    it recomputes the forward step and runs its VJP (`body.outputs` is set on the trace).
    And the residuals: (value here, forward body value) of the expensive step-varying
    values the VJP reads (the caller makes them per-step inputs)."""
    consts, init, xs = _split(node)
    fwd = node.params["body"]
    nk = node.params["num_carry"]
    body = Trace(parent=trace)
    g_carry = [body.new_input(init[j].type).ir_var for j in float_carry]
    acc = [body.new_input(consts[i].type).ir_var for i in want_consts]
    x_t = [body.new_input(TensorType(v.shape[1:], v.dtype)).ir_var for v in xs]
    c_t = [body.new_input(v.type).ir_var for v in init]
    g_y = [body.new_input(fwd.outputs[nk + k].type).ir_var for k in y_with_grads]
    local_consts = [body.lift(v) for v in consts]
    start = len(body.nodes)
    copies: dict[Var, Var] = {}  # forward body value -> its recomputation here
    with body.annotate("recomputed forward step", node.source):
        outs = body.inline(fwd, [*local_consts, *c_t, *x_t], copies)
    stop = len(body.nodes)
    seeds: dict[Var, Var] = {}
    pairs = [(outs[j], g) for j, g in zip(float_carry, g_carry)]
    pairs += [(outs[nk + k], g) for k, g in zip(y_with_grads, g_y)]
    with body.annotate("vjp scan step: seeds", node.source):
        for var, g in pairs:
            if not _is_float(var):
                continue
            seeds[var] = g if var not in seeds else \
                F.add(F.wrap(body, seeds[var]), F.wrap(body, g)).ir_var
    wrt = [local_consts[i] for i in want_consts] + [c_t[j] for j in float_carry] + \
        [x_t[i] for i in want_xs]
    with body.annotate("", node.source):
        results = backward_pass(body, start, stop, seeds, wrt)
    g_consts = results[:len(want_consts)]
    g_c = results[len(want_consts):len(want_consts) + len(float_carry)]
    g_x = results[len(want_consts) + len(float_carry):]
    with body.annotate("vjp scan step: accumulate", node.source):
        sums = [F.add(F.wrap(body, a), F.wrap(body, g)).ir_var for a, g in zip(acc, g_consts)]
    body.outputs = [body.lift(v) for v in [*g_c, *sums, *g_x]]
    varying = {copies[v] for v in _step_varying(fwd, node.params["num_consts"])}
    # what the VJP needs of the recomputed step, through its cheap nodes: the expensive
    # values among it are read from the forward instead
    needed = {v for n in body.nodes[stop:] for v in n.inputs} | set(body.outputs)
    saved: set[Var] = set()
    for n in reversed(body.nodes[start:stop]):
        if not any(v in needed for v in n.outputs):
            continue
        if n.op in EXPENSIVE and n.outputs[0] in varying:
            saved.update(v for v in n.outputs if v in needed)
        else:
            needed.update(n.inputs)
    residuals = [(copies[v], v) for n in fwd.nodes for v in n.outputs if copies[v] in saved]
    return body, residuals

