"""One thread pool at a time: BLAS is held to one thread while a driver runs Numba threads.

Generated drivers call BLAS (SciPy's OpenBLAS, through Numba's `np.dot`) for matmuls, and
run Numba's own threads for convolutions and large loop kernels. Both pools keep their
threads busy-waiting after a job (OpenBLAS for ~0.1 s), so in a driver that uses both, each
pool's jobs ran against the other's spinning threads on a 2-core machine: in the CNN step the
convolution after the dense layer's matmuls went from 2 to 17 ms. OpenBLAS's thread count is
global (there is no per-call setting), so a driver that runs Numba threads
(`Generated.threads`) is called with it set to one and set back after. A driver without
Numba threads leaves BLAS as it is: the large matmuls of an MLP want BLAS's threads.

The controls are found in the library SciPy's BLAS wrappers load (OpenBLAS as SciPy's wheels
ship it, or a system OpenBLAS). With another BLAS nothing is held: only speed differs.
"""

from __future__ import annotations

import ctypes
import functools
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

        library = ctypes.CDLL(cython_blas.__file__)  # dlsym searches its dependencies too
    except (ImportError, OSError):
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


def with_one_blas_thread(driver: Callable) -> Callable:
    """`driver` wrapped to run with BLAS held to one thread (set back after, also on error)."""
    controls = blas_thread_controls()
    if controls is None:
        return driver
    get, set_ = controls

    def call(*args):
        before = get()
        if before <= 1:
            return driver(*args)
        set_(1)
        try:
            return driver(*args)
        finally:
            set_(before)

    call.__wrapped__ = driver
    return call
