"""Processes training as one: this process's rank, the number of ranks, and the MPI plumbing
under `compiler.all_reduce` and `train_step(..., data_parallel=True)`.

MPI comes from the optional `.[mpi]` extra (mpi4py and MPICH) and is initialised on first use,
and only when a launcher started this process (`mpiexec`, `srun`: PMI_*, PMIX_* or OMPI_*
variables in the environment). Without one, or without mpi4py, everything runs as one rank
and mpi4py is never imported. `CHAINJIT_MPI=1` forces MPI (a singleton MPI_Init),
`CHAINJIT_MPI=0` forbids it.

>>> from runtime import distributed
>>> distributed.size(), distributed.rank(), distributed.is_root()
(1, 0, True)

chainjit works on a duplicate of COMM_WORLD (its collectives never match a user's own). What
MPI jobs are hated for, and what happens here instead, with more than one rank:

- a rank that raises: an uncaught exception aborts the whole job (`sys.excepthook` prints the
  traceback, then calls MPI_Abort, as `python -m mpi4py` does), instead of the other ranks
  waiting in their next collective forever;
- a rank that never reaches a collective (it skipped a step, hangs, or exited): each
  collective chainjit makes runs under a watchdog, a thread that aborts the job with a message
  naming the rank, the step and the timeout once a collective has waited longer than
  `CHAINJIT_MPI_TIMEOUT` seconds (default 60; `train_step(..., timeout=...)`). The compiled
  step releases the GIL while it waits in MPI_Allreduce, so the watchdog runs; a step pays two
  attribute writes for it, no extra message.

This module imports nothing from the compiler (tests/test_imports.py): the compiled
collective's kernel (compiler/kernels/mpi.py) and the interpreter call into it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import numpy as np

__all__ = ["barrier", "is_root", "rank", "rank_key", "size"]

# Set by the launchers for every rank: MPICH's hydra (PMI_*), PMIx (Open MPI 5, Slurm),
# Open MPI (OMPI_*) and Slurm's srun with --mpi=pmi2 (PMI_*).
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE")
DEFAULT_TIMEOUT = 60.0  # seconds a collective may wait for the other ranks
ABORT_GRACE = 0.3  # seconds between printing why a rank aborts and MPI_Abort


class DistributedError(RuntimeError):
    """The ranks of a data-parallel job disagree (shapes, graphs) or MPI failed."""


class World:
    """The ranks this process trains with: `size` 1 and no `comm` without MPI."""

    def __init__(self, comm=None, mpi=None):
        self.comm, self.mpi = comm, mpi  # chainjit's communicator (a Dup of COMM_WORLD)
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self.watchdog = Watchdog(self)

    # -- collectives on NumPy arrays (Python side: the interpreter, first calls, fit) ---------
    def allreduce(self, buffer: np.ndarray, op: str = "sum") -> np.ndarray:
        """`buffer` (C-contiguous) reduced in place across ranks: sum, mean, max or min."""
        if self.size == 1:
            return buffer
        mpi = self.mpi
        mpi_op = {"sum": mpi.SUM, "mean": mpi.SUM, "max": mpi.MAX, "min": mpi.MIN}[op]
        with self.watchdog.armed(f"all_reduce[{op}] of {buffer.dtype}[{buffer.size}]"):
            self.comm.Allreduce(mpi.IN_PLACE, buffer, op=mpi_op)
        if op == "mean":
            buffer[...] = buffer / np.float64(self.size)  # as the compiled kernel rounds
        return buffer

    def broadcast(self, arrays: list[np.ndarray], root: int = 0) -> None:
        """Each array overwritten in place with rank `root`'s values."""
        if self.size == 1:
            return
        with self.watchdog.armed("the broadcast of parameters and optimiser state"):
            for array in arrays:
                if array.flags.c_contiguous:
                    self.comm.Bcast(array, root=root)
                else:
                    copy = np.ascontiguousarray(array)
                    self.comm.Bcast(copy, root=root)
                    np.copyto(array, copy)

    def allgather(self, value: Any, what: str = "an allgather") -> list:
        """Every rank's `value` (a small picklable object), in rank order."""
        if self.size == 1:
            return [value]
        with self.watchdog.armed(what):
            return self.comm.allgather(value)

    def barrier(self, what: str = "a barrier", timeout: float | None = None) -> None:
        if self.size > 1:
            with self.watchdog.armed(what, timeout):
                self.comm.Barrier()

    def host(self) -> World:
        """The ranks of this job on this host (MPI_COMM_TYPE_SHARED), as a World."""
        if getattr(self, "_host", None) is None:
            self._host = self if self.comm is None else \
                World(self.comm.Split_type(self.mpi.COMM_TYPE_SHARED), self.mpi)
            self._host.watchdog = self.watchdog
        return self._host

    def abort(self, message: str, code: int = 1) -> None:
        """Print `message` and end every rank of the job (MPI_Abort on COMM_WORLD)."""
        sys.stderr.write(f"chainjit: rank {self.rank} of {self.size}: {message}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        time.sleep(ABORT_GRACE)  # mpiexec forwards what this rank printed before it kills it
        if self.mpi is not None:
            self.mpi.COMM_WORLD.Abort(code)
        os._exit(code)  # pragma: no cover - MPI_Abort does not return

    # -- the handles compiled code needs (compiler/kernels/mpi.py) ------------------------
    def handles(self) -> dict[str, int]:
        """Handle values and sizes of this process's MPI library: read at bind time, never
        baked into generated or cached code."""
        mpi = self.mpi
        if mpi is None:
            return {"size": 1}
        handle = mpi._handleof
        return {
            "size": self.size, "handle_bytes": mpi._sizeof(mpi.Comm),
            "comm": handle(self.comm), "in_place": int(mpi.IN_PLACE),
            "sum": handle(mpi.SUM), "max": handle(mpi.MAX), "min": handle(mpi.MIN),
            "float32": handle(mpi.FLOAT), "float64": handle(mpi.DOUBLE),
            "int32": handle(mpi.INT32_T), "int64": handle(mpi.INT64_T),
        }

    def allreduce_address(self) -> int | None:
        """The address of MPI_Allreduce in the MPI library mpi4py loaded."""
        if self.mpi is None:
            return None
        import ctypes

        library = ctypes.CDLL(self.mpi.__file__)  # its MPI library comes with it
        return ctypes.cast(library.MPI_Allreduce, ctypes.c_void_p).value


class Watchdog:
    """Ends the job when a collective waits longer than its timeout (see the module doc).

    `armed(what)` is a context: the thread (started on first use) looks every 50 ms at
    when the current collective began; the step's fast path sets `since`/`what` directly."""

    def __init__(self, world: World):
        self.world = world
        self.since: float | None = None
        self.what = ""
        self.limit = DEFAULT_TIMEOUT
        self.timeout = float(os.environ.get("CHAINJIT_MPI_TIMEOUT", DEFAULT_TIMEOUT))
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self.world.size > 1:
            self._thread = threading.Thread(target=self._watch, name="chainjit-mpi-watchdog",
                                            daemon=True)
            self._thread.start()

    def arm(self, what: str, timeout: float | None = None) -> None:
        self.start()
        self.what, self.limit = what, self.timeout if timeout is None else timeout
        self.since = time.monotonic()

    def disarm(self) -> None:
        self.since = None

    def armed(self, what: str, timeout: float | None = None):
        return _Armed(self, what, timeout)

    def _watch(self) -> None:
        while True:
            time.sleep(0.05)
            since = self.since
            if since is not None and time.monotonic() - since > self.limit:
                self.world.abort(
                    f"{self.what} waited more than {self.limit:g} s for the other ranks: a "
                    "rank did not reach this collective (it skipped the step, hangs, or "
                    "exited). Aborting the job. (The limit is CHAINJIT_MPI_TIMEOUT or "
                    "train_step(..., timeout=...).)")


class _Armed:
    def __init__(self, watchdog: Watchdog, what: str, timeout: float | None):
        self.watchdog, self.what, self.timeout = watchdog, what, timeout

    def __enter__(self):
        self.watchdog.arm(self.what, self.timeout)

    def __exit__(self, *exc):
        self.watchdog.disarm()


_WORLD: World | None = None
_LOCK = threading.Lock()


def launched() -> bool:
    """Whether this process should use MPI: started by a launcher, or CHAINJIT_MPI=1."""
    forced = os.environ.get("CHAINJIT_MPI", "")
    if forced in ("0", "1"):
        return forced == "1"
    return any(v in os.environ for v in LAUNCHER_VARIABLES)


def world() -> World:
    """This process's World, initialising MPI on the first call when `launched()`."""
    global _WORLD
    if _WORLD is None:
        with _LOCK:
            if _WORLD is None:
                _WORLD = _initialise()
    return _WORLD


def _initialise() -> World:
    if not launched():
        return World()
    try:
        from mpi4py import MPI
    except ImportError:
        if os.environ.get("PMI_SIZE", "1") == "1" and \
                os.environ.get("OMPI_COMM_WORLD_SIZE", "1") == "1":
            return World()  # a launcher, but one rank: nothing to talk to
        raise DistributedError(
            "this process was started by an MPI launcher with several ranks, but mpi4py is "
            "not installed; install the extra: pip install -e '.[mpi]'") from None
    world = World(MPI.COMM_WORLD.Dup(), MPI)
    if world.size > 1:
        _install_excepthook(world)
    return world


def _install_excepthook(world: World) -> None:
    previous = sys.excepthook

    def abort_the_job(kind, error, tb):
        previous(kind, error, tb)  # the traceback first
        world.abort(f"uncaught {kind.__name__}: ending all {world.size} ranks (MPI_Abort) so "
                    "that none waits in a collective for this one")

    sys.excepthook = abort_the_job


def rank() -> int:
    """This process's rank, 0 .. size() - 1."""
    return world().rank


def size() -> int:
    """The number of ranks (processes) in the job: 1 without mpiexec."""
    return world().size


def is_root() -> bool:
    """Whether this is rank 0 (the rank that prints, saves checkpoints, keeps history)."""
    return world().rank == 0


def barrier(timeout: float | None = None) -> None:
    """Wait until every rank has reached this line; under the watchdog, which ends the job
    after `timeout` seconds (default CHAINJIT_MPI_TIMEOUT)."""
    world().barrier("distributed.barrier()", timeout)


def rank_key(key):
    """A random key for this rank: distinct keys give distinct keys on every rank (for
    `nn.dropout(x, rate, rank_key(step))` in a data-parallel loss); `key` itself in one
    process. Works on traced keys too.

    >>> rank_key(7)
    7
    """
    w = world()
    return key * w.size + w.rank if w.size > 1 else key
