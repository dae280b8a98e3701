"""Codegen for loop nodes (SCAN, WHILE): the loop is a loop in the driver.

Registered in compiler/codegen/ops.py's `EMIT_RULES`. A loop node's body (already optimised
and fused, compiler/pipeline.py) is emitted once, inside a `for step_<k> in range(n):` (or a
`while True:`) of the driver, by the same per-op emitters as straight-line code:

    h = <work buffer>; copy init into h           # the carry lives in the final carry's storage
    for step_0 in range(n):
        at_0 = step_0                             # n - 1 - step_0 when reverse
        x_0 = c_view(xs, at_0 * size, dims)       # step t's slice of each xs: a view, no copy
        <the body's blocks>                       # outlined into kernels once (outline.py)
        <y_t copied into ys[at_0]; the new carry copied into h>

Every buffer the body uses is planned once, live for the whole loop node (so none shares a
slot with another value alive then) and reused by every step: nothing is allocated per step.
The carry is updated by copy at the end of the step, through a temporary when the new
carry reads another carry's storage (a swap) or is a view of its own. Sizes come from the
arrays (the steps from xs' leading axis), so the text and kernels do not depend on them.
"""

from __future__ import annotations

from compiler.codegen.emitter import NUMPY_DTYPE_NAMES, CodeGen, Value
from compiler.codegen.plan import alias_bases
from ir.graph import Graph, Node, Var
from ir.ops import Op


def _bind(gen: CodeGen, inner: Var, outer: Var) -> None:
    gen.values[inner] = gen.values[outer]
    gen.dims[inner] = gen.dims[outer]


def _carry_storage(gen: CodeGen, outs: tuple[Var, ...], init: tuple[Var, ...]) -> None:
    """The final carry's storage holds the carry while the loop runs; it starts as init."""
    for out, x0 in zip(outs, init):
        gen.set_dims(out, gen.dims[x0])
        if out.ndim == 0:
            name = gen.name(out)
            gen.line(f"{name} = {NUMPY_DTYPE_NAMES[out.dtype]}({gen.read(x0, [])})")
            gen.values[out] = Value("scalar", name)
        else:
            gen.copy(gen.alloc(out), x0)


def _emit_body(gen: CodeGen, body: Graph, in_place: dict[Var, Var] | None = None) -> None:
    """The body's nodes, each a block; `in_place` (new carry -> carry input) are written
    straight into the carry's storage by their node (no guard: the body's own values)."""
    gen.producers.update(body.producers())
    # A step's work is small (a GRU step's matmul is 32x128x384): on Numba's thread pool each
    # of its kernels paid a fork/join every step (and their spinning threads were 80% of the
    # GRU step's profile), so a body runs on the calling thread, matmuls on BLAS (held to one
    # thread in a pooled driver, runtime/execution/blas.py).
    saved = gen.guard, gen.threads
    gen.guard, gen.threads = None, False
    gen.direct.update(in_place or {})
    try:
        for node in body.nodes:
            gen.line("")
            gen.comment_node(node, indent="  ")
            gen.emit_rules[node.op](gen, node)  # ops.EMIT_RULES (which imports this)
    finally:
        gen.guard, gen.threads = saved
        for var in in_place or {}:
            del gen.direct[var]


def accumulated_in_place(body: Graph, carry_in: list[Var], carry_out: list[Var]) -> dict:
    """New carries a gemm kernel can accumulate into their carry's own storage: `c + a @ b`
    (a cotangent summed over the steps, as in a scan's backward) where the gemm is the only
    reader of the old c. Saves two copies of c every step."""
    consumers = body.consumers()
    producers = body.producers()
    found = {}
    for new, old in zip(carry_out, carry_in):
        node = producers.get(new)
        if node is None or node.op is not Op.GEMM or node.inputs[2] is not old:
            continue
        if consumers.get(old) != [node] or old in body.outputs \
                or carry_out.count(new) > 1 or old in node.inputs[:2] + node.inputs[3:]:
            continue
        found[new] = old
    return found


def _update_carry(gen: CodeGen, body: Graph, carry_in: list[Var], carry_out: list[Var],
                  storage: list[Var]) -> None:
    """Copy the step's new carry into the carry's storage (temporaries first where a new
    value reads carry storage another write overwrites)."""
    bases = alias_bases(body)
    inputs = set(carry_in)
    sources: list[Var | None] = []
    for new, old in zip(carry_out, carry_in):
        if new is old:
            sources.append(None)
            continue
        through = new.ndim == 0 or bases.get(new, new) in inputs \
            or gen.values[new].kind != "array" or gen.values[new].layout != "C"
        if through:
            temp = Var(new.type)
            gen.set_dims(temp, gen.dims[new])
            if new.ndim == 0:
                name = gen.fresh("carry_")
                gen.line(f"{name} = {gen.read(new, [])}")
                gen.values[temp] = Value("scalar", name)
            else:
                gen.copy(gen.alloc(temp, gen.fresh("carry_")), new)
            new = temp
        sources.append(new)
    for new, out in zip(sources, storage):
        if new is None:
            continue
        if out.ndim == 0:
            gen.line(f"{gen.name(out)} = {NUMPY_DTYPE_NAMES[out.dtype]}({gen.read(new, [])})")
        elif gen.values[new].kind != "array" or gen.values[new].name != gen.values[out].name:
            gen.copy(gen.values[out].name, new)  # (else accumulated in place)


def emit_scan(gen: CodeGen, node: Node) -> None:
    p = node.params
    body, nc, nk = p["body"], p["num_consts"], p["num_carry"]
    consts, init, xs = node.inputs[:nc], node.inputs[nc:nc + nk], node.inputs[nc + nk:]
    carry_in = list(body.inputs[nc:nc + nk])
    steps = gen.dims[xs[0]][0] if xs else gen.resolve_dim(p["length"])
    for inner, outer in zip(body.inputs[:nc], consts):
        _bind(gen, inner, outer)
    _carry_storage(gen, node.outputs[:nk], init)
    for inner, outer in zip(carry_in, node.outputs[:nk]):
        _bind(gen, inner, outer)
    seqs = [gen.array(x, "C") for x in xs]
    stacks = []
    for out in node.outputs[nk:]:
        gen.set_dims(out, [steps] + [gen.resolve_dim(d) for d in out.shape[1:]])
        stacks.append(gen.alloc(out))
    step, at = gen.fresh("step_"), gen.fresh("at_")
    gen.line("")  # the loop is a block of its own: it stays in the driver (outline.py)
    gen.line(f"for {step} in range({steps}):  # scan")
    gen.depth += 1
    gen.line(f"{at} = {steps} - 1 - {step}" if p["reverse"] else f"{at} = {step}")
    for name, outer, inner in zip(seqs, xs, body.inputs[nc + nk:]):
        dims = gen.dims[outer][1:]
        gen.dims[inner] = dims
        local = gen.fresh(f"{gen.name(inner)}_x")
        if inner.ndim == 0:
            gen.line(f"{local} = {name}[{at}]")
            gen.values[inner] = Value("scalar", local)
        else:
            size = " * ".join(dims)
            gen.line(f"{local} = {gen.c_reshape(name, dims, f'{at} * {size}')}")
            gen.values[inner] = Value("array", local, "C")
    _emit_body(gen, body, accumulated_in_place(body, carry_in, list(body.outputs[:nk])))
    gen.line("")
    gen.line("# the step's ys, then its new carry")
    for name, out, y in zip(stacks, node.outputs[nk:], body.outputs[nk:]):
        dims = gen.dims[out][1:]
        if y.ndim == 0:
            gen.line(f"{name}[{at}] = {gen.read(y, [])}")
            continue
        size = " * ".join(dims)
        row = gen.fresh(f"{name}_t")
        gen.line(f"{row} = {gen.c_reshape(name, dims, f'{at} * {size}')}")
        gen.copy(row, y)
    _update_carry(gen, body, carry_in, list(body.outputs[:nk]), list(node.outputs[:nk]))
    gen.depth -= 1


def emit_while(gen: CodeGen, node: Node) -> None:
    p = node.params
    cond, body, ncc = p["cond"], p["body"], p["num_cond_consts"]
    nk = len(body.outputs)
    init = node.inputs[len(node.inputs) - nk:]
    for inner, outer in zip(cond.inputs[:ncc], node.inputs[:ncc]):
        _bind(gen, inner, outer)
    for inner, outer in zip(body.inputs[:len(body.inputs) - nk], node.inputs[ncc:-nk or None]):
        _bind(gen, inner, outer)
    _carry_storage(gen, node.outputs, init)
    for inner, outer in zip(cond.inputs[ncc:], node.outputs):
        _bind(gen, inner, outer)
    carry_in = list(body.inputs[len(body.inputs) - nk:])
    for inner, outer in zip(carry_in, node.outputs):
        _bind(gen, inner, outer)
    gen.line("")
    gen.line("while True:  # while_loop")
    gen.depth += 1
    _emit_body(gen, cond)
    gen.line("")
    gen.line(f"if not {gen.read(cond.outputs[0], [])}:")
    gen.line("    break")
    _emit_body(gen, body)
    gen.line("")
    gen.line("# the new carry")
    _update_carry(gen, body, carry_in, list(body.outputs), list(node.outputs))
    gen.depth -= 1
