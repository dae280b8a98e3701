"""One thread pool at a time: BLAS is held to one thread while a driver runs Numba threads.

Generated drivers call BLAS (SciPy's OpenBLAS) for matmuls and can run Numba's own threads
for convolutions and loop kernels. Both pools keep their threads busy-waiting after a job
(OpenBLAS for ~0.1 s), so in a driver that used both, each pool's jobs ran against the
other's spinning threads on a 2-core machine: in the CNN step the convolution after the dense
layer's matmuls went from 2 to 17 ms, and the transformer step with its loop kernels on
Numba's threads took 109 ms instead of 38. So a driver uses one pool or the other
(compiler/codegen/loops.py, `pooled`). A pooled driver (`Generated.threads`) runs its
matmuls on Numba's threads too (compiler/kernels/matmul.py: each thread calls BLAS on a block
of the product), and is called with BLAS's thread count set to one and set back after (the
count is global: there is no per-call setting). Other drivers, an MLP step's, leave BLAS its
threads: their work is in their matmuls.

The controls are found in the library SciPy's BLAS wrappers load (OpenBLAS as SciPy's wheels
ship it, or a system OpenBLAS). With another BLAS nothing is held, and codegen keeps a pooled
driver's matmuls on `np.dot`: only speed differs.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from typing import Callable

# (get, set) symbol names, the first found is used
_CONTROLS = [
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
]


@functools.lru_cache(maxsize=1)
def blas_thread_controls() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """(get, set) of the thread count of the BLAS that Numba's matmuls call, or None."""
    try:
        import scipy.linalg.cython_blas as cython_blas
    except ImportError:
        return None
    return _controls_in(cython_blas.__file__)


@functools.lru_cache(maxsize=1)
def numpy_blas_thread_controls() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """(get, set) of the thread count of NumPy's own BLAS (the reference interpreter's), or
    None; NumPy's wheels bundle an OpenBLAS of their own, apart from SciPy's."""
    import numpy._core._multiarray_umath as umath

    return _controls_in(umath.__file__)


def _controls_in(path: str) -> tuple[Callable[[], int], Callable[[int], None]] | None:
    try:
        library = ctypes.CDLL(path)  # dlsym searches its dependencies too
    except OSError:
        return None
    for get_name, set_name in _CONTROLS:
        try:
            get, set_ = getattr(library, get_name), getattr(library, set_name)
        except AttributeError:
            continue
        get.argtypes, get.restype = [], ctypes.c_int
        set_.argtypes, set_.restype = [ctypes.c_int], None
        return get, set_
    return None


class _Hold:
    """Holds BLAS to one thread while any wrapped call runs: the first call in sets it and
    the last one out gives the count back (calls may overlap in Python threads: Numba and
    ctypes release the GIL)."""

    def __init__(self, get: Callable[[], int], set_: Callable[[int], None]):
        self.get, self.set = get, set_
        self.lock = threading.Lock()
        self.holders = 0
        self.before = 1

    def __enter__(self) -> None:
        with self.lock:
            if self.holders == 0:
                self.before = self.get()
                if self.before > 1:
                    self.set(1)
            self.holders += 1

    def __exit__(self, *exc) -> None:
        with self.lock:
            self.holders -= 1
            if self.holders == 0 and self.before > 1:
                self.set(self.before)


@functools.lru_cache(maxsize=1)
def _hold() -> _Hold | None:
    controls = blas_thread_controls()
    return None if controls is None else _Hold(*controls)


@functools.lru_cache(maxsize=1)
def _numpy_hold() -> _Hold | None:
    controls = numpy_blas_thread_controls()
    return None if controls is None else _Hold(*controls)


def with_one_numpy_blas_thread(fn: Callable) -> Callable:
    """`fn` run with NumPy's BLAS held to one thread: while a compile keeps one core busy
    (runtime/background.py), two-thread BLAS calls wait on a thread that has no core and ran
    10-30x slower; `fn` itself when NumPy's BLAS has no control chainjit knows."""
    return _holding(fn, _numpy_hold())


def with_one_blas_thread(driver: Callable) -> Callable:
    """`driver` wrapped to run with BLAS held to one thread (given back after, also on
    error); `driver` itself when this BLAS has no thread control chainjit knows."""
    return _holding(driver, _hold())


def _holding(fn: Callable, hold: _Hold | None) -> Callable:
    if hold is None:
        return fn

    def call(*args):
        with hold:
            return fn(*args)

    call.__wrapped__ = fn
    return call
