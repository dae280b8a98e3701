"""Time to first result: an executable served by the reference interpreter while it compiles.

A training loop should not sit idle for the seconds a new step takes to compile.
`BackgroundBuild(build, fallback)` runs `build()` (passes, code generation, Numba) on a
thread and answers calls with `fallback(leaves)` (the reference interpreter, ir/interpreter.py,
with the same donation: parameters and optimiser state are updated in place on both paths)
until the compiled executable is ready; `Compiled` (compiler/api.py) then puts the compiled
one in its place. Numba's compiler runs its LLVM passes without the GIL, and NumPy releases
it in large operations, so on two cores both make progress. What the fallback computes is
the same graph in NumPy, equal up to float rounding: `wait=True` or ``CHAINJIT_WAIT=1`` waits
for the compiled code instead, for runs that must be bit-identical.

The process waits for a running build at exit (the work lands in the disk cache, so the next
run starts compiled), and a build that failed raises its error on the next call.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from runtime.execution.blas import with_one_numpy_blas_thread

_RUNNING: weakref.WeakSet = weakref.WeakSet()


def wait_requested(wait: bool | None) -> bool:
    """An explicit `wait` argument, else the environment: CHAINJIT_WAIT=1 waits."""
    if wait is not None:
        return wait
    return os.environ.get("CHAINJIT_WAIT", "") not in ("", "0")


class BackgroundBuild:
    """Calls go to `fallback` until `build()`, run on a thread, has returned the executable."""

    def __init__(self, name: str, build: Callable[[], Any], fallback: Callable[[list], list]):
        self.name = name
        self.fallback = with_one_numpy_blas_thread(fallback)  # the other core compiles
        self.result: Any = None
        self.error: BaseException | None = None
        self.served = 0  # calls the fallback answered
        self.started = time.perf_counter()
        self.seconds: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(build,), daemon=True,
                                        name=f"chainjit-compile-{name}")
        _RUNNING.add(self)
        print(f"chainjit: compiling {name} in the background; until it is ready, calls run on "
              "the reference interpreter (wait=True or CHAINJIT_WAIT=1 waits instead)",
              file=sys.stderr)
        self._thread.start()

    def _run(self, build: Callable[[], Any]) -> None:
        try:
            self.result = build()
        except BaseException as error:  # noqa: BLE001 - raised on the next call
            self.error = error
        finally:
            self.seconds = time.perf_counter() - self.started
            self._done.set()

    @property
    def ready(self) -> bool:
        return self._done.is_set()

    def wait(self) -> Any:
        """Block until the build ends; the compiled executable (or the build's error)."""
        self._done.wait()
        if self.error is not None:
            raise self.error
        return self.result

    def __call__(self, leaves: list) -> list:
        if self.ready:
            return self.wait()(leaves)
        self.served += 1
        return self.fallback(leaves)

    def announce(self) -> None:
        """One line when the compiled code takes over."""
        print(f"chainjit: {self.name} compiled in {self.seconds:.1f} s; {self.served} "
              f"call{'s' if self.served != 1 else ''} ran on the reference interpreter "
              "meanwhile", file=sys.stderr)


@atexit.register
def _wait_for_running_builds() -> None:
    running = [build for build in list(_RUNNING) if not build.ready]
    if running:
        names = ", ".join(build.name for build in running)
        print(f"chainjit: finishing the compile of {names} before exiting (it goes into the "
              "disk cache: the next run starts compiled)", file=sys.stderr)
    for build in running:
        build._done.wait()
