"""Codegen for CONV2D: one call of a cached Numba kernel from compiler/kernels/conv.py.

Registered in compiler/codegen/ops.py's `EMIT_RULES`. The loops live in
compiler/kernels/conv.py, compiled once per dtype and cached on disk, so no graph's cold
compile pays for them again (the inline version cost about 9 loop nests per conv).

Two kernels. A CONV2D of two batch<->channel transposes, CONV2D(xᵀ, gᵀ), is the weight
gradient compiler/vjp_rules.py emits: `conv2d_weight_grad` reads x and g themselves (no
transposed copies), with the strides and dilation of the convolution it differentiates
(the node's dilation and strides). Every other CONV2D is `conv2d_forward` over C-contiguous
operands (a view, such as the cotangent of a sum broadcast to the output, is copied once).
"""

from __future__ import annotations

from compiler.codegen.emitter import CodeGen
from ir.graph import Node, Var
from ir.ops import Op

KERNELS_MODULE = "compiler.kernels.conv"
BATCH_CHANNEL_SWAP = (1, 0, 2, 3)


def _ints(*values: int) -> str:
    """Geometry arguments as np.int64(v): a bare literal is typed Literal[int](v), and Numba
    would compile (and cache) the whole kernel again for every distinct geometry."""
    return ", ".join(f"np.int64({v})" for v in values)


def _untransposed(gen: CodeGen, var: Var) -> Var | None:
    """The source of `var` when `var` is a batch<->channel transpose, else None."""
    node = gen.producers.get(var)
    if node is not None and node.op == Op.TRANSPOSE and \
            tuple(node.params["perm"]) == BATCH_CHANNEL_SWAP:
        return node.inputs[0]
    return None


def emit_conv2d(gen: CodeGen, node: Node) -> None:
    x, w = node.inputs
    out = node.out
    (sh, sw), ((loh, _), (low, _)), (dh, dw) = (node.params[k] for k in
                                                 ("strides", "padding", "dilation"))
    kh, kw = w.shape[2:]
    big_b, c = gen.dims[x][:2]
    o = gen.dims[w][0]
    ho, wo = (gen.resolve_dim(d) for d in out.shape[2:])
    gen.set_dims(out, (big_b, o, ho, wo))
    assert gen.threads, "a driver with a convolution runs on Numba's threads (pooled)"
    x_src, g_src = _untransposed(gen, x), _untransposed(gen, w)
    if x_src is not None and g_src is not None:
        source, cotangent = gen.array(x_src, "C"), gen.array(g_src, "C")
        name = gen.alloc(out)
        gen.fast_imports.add(f"{KERNELS_MODULE}:conv2d_weight_grad")
        gen.line(f"conv2d_weight_grad({source}, {cotangent}, {name}, "
                 f"{_ints(out.shape[2], out.shape[3], dh, dw, loh, low, sh, sw)})")
        return
    source = gen.array(x, "C")  # a broadcast scalar (the cotangent of a sum) is copied too
    kernel = gen.array(w, "C")
    name = gen.alloc(out)
    gen.fast_imports.add(f"{KERNELS_MODULE}:conv2d_forward")
    gen.line(f"conv2d_forward({source}, {kernel}.reshape(({o}, {c} * {kh * kw})), {name}, "
             f"{_ints(kh, kw, sh, sw, loh, low, dh, dw)})")
