"""The Numba kernel libraries generated code calls: each an ordinary module of `@njit`
functions, compiled once per machine and kept in Numba's disk cache.

    fastmath.py  vectorisable float32 exp, log, tanh, sigmoid, ... (within 3 ulp)
    blas.py      one BLAS product with alpha and beta (gemm), from any thread
    matmul.py    matmuls shared out between Numba's threads
    conv.py      convolutions as patch-matrix products
    parallel.py  the parfor options, the thread-pool launch and an atomic counter
"""
