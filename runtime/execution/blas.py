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
import time
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
    (runtime/execution/background.py), two-thread BLAS calls wait on a thread that has no core
    and ran 10-30x slower; `fn` itself when NumPy's BLAS has no control chainjit knows."""
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


# -- one thread while a core is taken ---------------------------------------------------------
# On a machine shared with other work (two cores, another process busy on one), a call that
# runs on two threads waits for a thread that has no core: measured on the Zen 5 EPYC with one
# core kept busy, two-thread OpenBLAS sgemm on the large MLP's products fell from 221-228 to
# 3-9 GFLOP/s (medians), one-thread calls stayed at 109-118; a transformer step on Numba's
# threads went from 18 ms to 220 ms. So a large driver's calls are timed, on all threads
# ("wide") or on one ("narrow"), and each call takes the mode whose recent calls were faster
# (medians of the last few, the first three calls narrow to start with; a switch as soon as
# the medians cross, so a machine busy from the start costs one stalled wide call): the other
# mode is tried again after `wait` calls, a wait that doubles each time the try loses (up to
# MAX_WAIT calls) and starts again at FIRST_WAIT when it wins. A wide call STALL times the
# median of recent wide calls switches to narrow at once.
STALL = 2.5
FIRST_WAIT = 16
MAX_WAIT = 4096
_OTHER = {"wide": "narrow", "narrow": "wide"}


class Adaptive:
    """`fn` on all threads or, in `narrow` (a context manager), on one: whichever has been
    faster lately (see above). `current` is the mode calls take."""

    def __init__(self, fn: Callable, narrow):
        self.fn, self.narrow = fn, narrow
        self.times: dict[str, list[float]] = {"wide": [], "narrow": []}
        self.current = "wide"
        self.wait = self.countdown = FIRST_WAIT
        self.switches = 0
        self.__wrapped__ = fn

    def __call__(self, *args):
        current = self.current
        other = _OTHER[current]
        mode = other if len(self.times[other]) < 3 or self.countdown <= 0 else current
        start = time.perf_counter()
        if mode == "narrow":
            with self.narrow:
                out = self.fn(*args)
        else:
            out = self.fn(*args)
        seconds = time.perf_counter() - start
        recent = self.times[current]
        usual = _median(recent) if len(recent) >= 3 else None
        _remember(self.times[mode], seconds)  # (recent is this list when mode is current)
        if mode != current:  # a try of the other mode
            if usual is not None and seconds < usual:
                self._switch(mode, mode, seconds)
            elif usual is not None:
                self.wait = min(2 * self.wait, MAX_WAIT)
            self.countdown = self.wait
        else:
            self.countdown -= 1
            if mode == "wide" and usual is not None and seconds > STALL * usual:
                self._switch("narrow", "wide", seconds)
            elif len(self.times[other]) >= 3 and \
                    _median(self.times[other]) < _median(recent):
                self._switch(other)  # this mode's recent calls are slower than the other's
        return out

    def _switch(self, mode: str, evidence: str | None = None, seconds: float = 0.0) -> None:
        """Calls take `mode` from now on; the call that decided it (a stall, a try that won)
        stands for its mode's recent calls, whose older times no longer hold."""
        if evidence is not None:
            self.times[evidence] = [seconds] * 3
        self.current = mode
        self.switches += 1
        self.wait = self.countdown = FIRST_WAIT


def _remember(times: list[float], seconds: float, keep: int = 9) -> None:
    times.append(seconds)
    if len(times) > keep:
        del times[0]


def _median(times: list[float]) -> float:
    return sorted(times)[len(times) // 2]


class _OneNumbaThread:
    """Numba's parallel regions on the calling thread only (numba.set_num_threads is per
    thread), and BLAS held to one thread as in every pooled driver."""

    def __enter__(self) -> None:
        import numba

        self.before = numba.get_num_threads()
        numba.set_num_threads(1)

    def __exit__(self, *exc) -> None:
        import numba

        numba.set_num_threads(self.before)


class _NoHold:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


def adaptive_threads(driver: Callable, pooled: bool) -> Callable:
    """`driver` (already wrapped by `with_one_blas_thread` when `pooled`) called through an
    `Adaptive`: narrow calls run Numba's regions on one thread (`pooled`) or BLAS on one.
    `CHAINJIT_ADAPTIVE=0` leaves `driver` as it is: a sum reduced on Numba's threads (a
    prange loop) rounds differently on one thread and on two, so with it on, which rounding
    a call gets depends on the machine's load; with it off, repeated runs are bit-identical."""
    import os

    if os.environ.get("CHAINJIT_ADAPTIVE", "1") == "0":
        return driver
    if pooled:
        return Adaptive(driver, _OneNumbaThread())
    hold = _hold()
    return Adaptive(driver, hold if hold is not None else _NoHold())
