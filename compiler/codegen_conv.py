"""Codegen for CONV2D: im2col per image into a small scratch matrix, then one BLAS GEMM.

Registered in compiler/codegen_ops.py's `EMIT_RULES`. For every image b of the batch the
emitted code fills `cols` (C*kh*kw, Ho*Wo) with the input pixels each output pixel sees
(zeros where the window leaves the input: padding, also negative padding = cropping), then
`np.dot(w (O, C*kh*kw), cols, out[b] (O, Ho*Wo))` writes NCHW output directly, with no
transpose. The scratch matrix stays in cache and is reused across the batch. Reads go
through `gen.read`, so a transposed input (the weight gradient correlates xᵀ with gᵀ, see
compiler/vjp_rules.py) is read in place; the kernel is made C-contiguous once (it is small,
or the output gradient at worst). Two fill orders: when the output rows are long the inner
loop runs along an output row (contiguous writes), otherwise along the kernel's width
(contiguous reads; the weight gradient's "kernel" is a whole image).
"""

from __future__ import annotations

from compiler.codegen import NUMPY_DTYPE_NAMES, CodeGen
from ir.graph import Node


def emit_conv2d(gen: CodeGen, node: Node) -> None:
    x, w = node.inputs
    out = node.out
    (sh, sw), ((loh, _), (low, _)), (dh, dw) = (node.params[k] for k in
                                                 ("strides", "padding", "dilation"))
    kh, kw = w.shape[2:]
    big_b, c, h, wd = gen.dims[x]
    o = gen.dims[w][0]
    ho, wo = (gen.resolve_dim(d) for d in out.shape[2:])
    gen.set_dims(out, (big_b, o, ho, wo))
    dtype = NUMPY_DTYPE_NAMES[out.dtype]
    kernel = _c_array(gen, w)
    name = gen.alloc(out)
    f = {k: gen.fresh(f"{k}_") for k in ("wm", "cols", "b", "c", "i", "j", "y", "x", "iy",
                                          "r", "lo", "hi", "ix")}
    k_size, p_size = f"{c} * {kh * kw}", f"{ho} * {wo}"
    gen.line(f"{f['wm']} = {kernel}.reshape(({o}, {k_size}))")
    gen.line(f"{f['cols']} = np.empty(({k_size}, {p_size}), {dtype})")
    gen.line(f"for {f['b']} in range({big_b}):")
    gen.depth += 1
    gen.line(f"for {f['c']} in range({c}):")
    gen.depth += 1
    if out.shape[3] >= kw:
        _fill_along_rows(gen, x, f, (kh, kw), (sh, sw), (loh, low), (dh, dw), (h, wd), (ho, wo))
    else:
        _fill_along_kernel(gen, x, f, (kh, kw), (sh, sw), (loh, low), (dh, dw), (h, wd),
                           (ho, wo))
    gen.depth -= 1
    gen.line(f"np.dot({f['wm']}, {f['cols']}, {name}[{f['b']}].reshape(({o}, {p_size})))")
    gen.depth -= 1


def _c_array(gen: CodeGen, var) -> str:
    """`var` as a C-contiguous array (a broadcast scalar, e.g. the cotangent of a sum, too)."""
    value = gen.values[var]
    if value.kind != "scalar":
        return gen.array(var, "C")
    name = gen.alloc_copy(var)
    gen.line(f"{name}.fill({value.name})")
    return name


def _fill_along_rows(gen, x, f, kernel, strides, lows, dilation, in_hw, out_hw) -> None:
    """cols[(c, i, j), (y, x)]: inner loop along an output row x, window column fixed."""
    (kh, kw), (sh, sw), (loh, low), (dh, dw), (h, wd), (ho, wo) = (
        kernel, strides, lows, dilation, in_hw, out_hw)
    b, c, i, j, y, xx, iy, r, lo, hi = (f[k] for k in ("b", "c", "i", "j", "y", "x", "iy", "r",
                                                       "lo", "hi"))
    cols = f["cols"]
    gen.line(f"for {i} in range({kh}):")
    gen.line(f"    for {j} in range({kw}):")
    gen.depth += 2
    gen.line(f"{r} = ({c} * {kh} + {i}) * {kw} + {j}")
    # output columns whose input column x*sw + j*dw - low lies in [0, W)
    gen.line(f"{lo} = min(max(0, -(({j} * {dw} - {low}) // {sw})), {wo})")
    gen.line(f"{hi} = max(min({wo}, ({wd} - 1 - {j} * {dw} + {low}) // {sw} + 1), {lo})")
    gen.line(f"for {y} in range({ho}):")
    gen.depth += 1
    gen.line(f"{iy} = {y} * {sh} + {i} * {dh} - {loh}")
    gen.line(f"if {iy} < 0 or {iy} >= {h}:")  # no slice assignment: parallel=True would
    gen.line(f"    for {xx} in range({wo}):")  # turn it into a parfor (threads per row)
    gen.line(f"        {cols}[{r}, {y} * {wo} + {xx}] = 0")
    gen.line("    continue")
    gen.line(f"for {xx} in range({lo}):")
    gen.line(f"    {cols}[{r}, {y} * {wo} + {xx}] = 0")
    src = gen.read(x, [b, c, iy, f"{xx} * {sw} + {j} * {dw} - {low}"])
    gen.line(f"for {xx} in range({lo}, {hi}):")
    gen.line(f"    {cols}[{r}, {y} * {wo} + {xx}] = {src}")
    gen.line(f"for {xx} in range({hi}, {wo}):")
    gen.line(f"    {cols}[{r}, {y} * {wo} + {xx}] = 0")
    gen.depth -= 3


def _fill_along_kernel(gen, x, f, kernel, strides, lows, dilation, in_hw, out_hw) -> None:
    """cols[(c, i, j), (y, x)]: inner loop along the kernel's width j, output pixel fixed."""
    (kh, kw), (sh, sw), (loh, low), (dh, dw), (h, wd), (ho, wo) = (
        kernel, strides, lows, dilation, in_hw, out_hw)
    b, c, i, j, y, xx, iy, ix, lo, hi = (f[k] for k in ("b", "c", "i", "j", "y", "x", "iy", "ix",
                                                        "lo", "hi"))
    cols = f["cols"]
    gen.line(f"for {i} in range({kh}):")
    gen.line(f"    for {y} in range({ho}):")
    gen.depth += 2
    gen.line(f"{iy} = {y} * {sh} + {i} * {dh} - {loh}")
    gen.line(f"if {iy} < 0 or {iy} >= {h}:")
    gen.line(f"    for {xx} in range({wo}):")
    gen.line(f"        for {j} in range({kw}):")
    gen.line(f"            {cols}[({c} * {kh} + {i}) * {kw} + {j}, {y} * {wo} + {xx}] = 0")
    gen.line("    continue")
    gen.line(f"for {xx} in range({wo}):")
    gen.depth += 1
    gen.line(f"{ix} = {xx} * {sw} - {low}")
    # kernel columns whose input column ix + j*dw lies in [0, W)
    gen.line(f"{lo} = min(max(0, -({ix} // {dw})), {kw})")
    gen.line(f"{hi} = max(min({kw}, ({wd} - 1 - {ix}) // {dw} + 1), {lo})")
    target = f"{cols}[({c} * {kh} + {i}) * {kw} + {j}, {y} * {wo} + {xx}]"
    src = gen.read(x, [b, c, iy, f"{ix} + {j} * {dw}"])
    gen.line(f"for {j} in range({lo}):")
    gen.line(f"    {target} = 0")
    gen.line(f"for {j} in range({lo}, {hi}):")
    gen.line(f"    {target} = {src}")
    gen.line(f"for {j} in range({hi}, {kw}):")
    gen.line(f"    {target} = 0")
    gen.depth -= 3
