"""Code generation: a fused graph -> readable Python source for Numba (text only, no compile).

    emitter.py   CodeGen: how generated code reads each IR value; names, lines, loops, buffers
    driver.py    generate(graph): walks the graph, one block per node, renders the module
    loops.py     loop nests: elementwise, reductions, FUSED loop kernels
    ops.py       EMIT_RULES: op -> emitter (movement, indexing, matmul, gemm, random, ...)
    conv.py      conv2d as calls of the kernels in compiler/kernels/conv.py
    buffers.py   the driver's work buffers and donated (in-place) outputs
    plan.py      liveness and slot assignment behind the buffer plan
    outline.py   each block that does work becomes a kernel module of its own
    summary.py   `kernel_summary`, what `Compiled.summary` prints

The Numba libraries the generated code calls (fast maths, BLAS, convolutions) are in
compiler/kernels/.
"""

from compiler.codegen.driver import generate, plan_buffers

__all__ = ["generate", "plan_buffers"]
