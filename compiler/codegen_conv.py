"""Codegen for CONV2D: one call of a cached Numba kernel from compiler/conv_kernels.py.

Registered in compiler/codegen_ops.py's `EMIT_RULES`. The loops (im2col per image into a
scratch matrix, then one BLAS GEMM per image writing NCHW output) live in
compiler/conv_kernels.py, compiled once per dtype and cached on disk, so no graph's cold
compile pays for them again (the inline version cost about 9 loop nests per conv). Here the
input and the kernel are made C-contiguous (a transposed view, as the weight gradient's xᵀ
and gᵀ in compiler/vjp_rules.py, is copied once) and the kernel variant is chosen: along
output rows, or along kernel rows when the output is narrower than the kernel.
"""

from __future__ import annotations

from compiler.codegen import CodeGen
from ir.graph import Node

KERNELS_MODULE = "compiler.conv_kernels"


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
    source = gen.array(x, "C")  # a broadcast scalar (the cotangent of a sum) is copied too
    kernel = gen.array(w, "C")
    name = gen.alloc(out)
    fn = "conv2d_rows" if out.shape[3] >= kw else "conv2d_kernel_rows"
    gen.fast_imports.add(f"{KERNELS_MODULE}:{fn}")
    gen.line(f"{fn}({source}, {kernel}.reshape(({o}, {c} * {kh * kw})), {name}, "
             f"{kh}, {kw}, {sh}, {sw}, {loh}, {low}, {dh}, {dw})")
