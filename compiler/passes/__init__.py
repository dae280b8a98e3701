"""The passes, one file a pass, each a function `Graph -> Graph` that returns the graph it was
given when it changes nothing (their order, sub-pipelines and cost models: compiler/pipeline.py).

    simplify.py        simplify_algebra: the rewrite table (x * 1 -> x, neg(neg(x)) -> x, ...)
    fold_constants.py  fold_constants: nodes of constants become constants
    cse.py             eliminate_common_subexpressions
    dce.py             eliminate_dead_code
    gemm_epilogue.py   fuse_gemm_epilogues: x + c (a @ b) as one accumulating BLAS call
    move_work.py       move_work_for_fusion: rewrites that let fusion form fewer kernels
    remat.py           rematerialize_cheap_values: recompute, rather than hold, cheap values
    fuse.py            fuse_elementwise: elementwise work and its reductions into FUSED kernels
"""
