"""Compile a generated driver (and the kernels it calls) in a process of its own.

A build in the background (runtime/execution/background.py) shares the GIL with the calls the
reference interpreter answers meanwhile; Numba's compiler is Python for most of its time, so in one
process the two took turns and the compile ran 2-3x longer. `compile_elsewhere(executable,
types)` runs this module as a child process, which loads the same modules from the cache
folder, compiles the driver for `types` into Numba's disk cache (with its links file,
runtime/execution/linking.py) and exits; the caller then loads the machine code from disk. A child
that fails leaves the caller to compile in its own process.

    python -m runtime.execution.compile_worker REQUEST   (a pickle: module texts and argument types)
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

from runtime.execution.cache import GENERATED_PREFIX, KERNEL_PREFIX, cache_dir, load_module

# A child that has not finished by then is ended (the caller compiles in-process instead).
TIMEOUT_S = 900


def compile_elsewhere(driver, kernel_modules: list[str], types: tuple) -> bool:
    """Compile `driver` (a generated module's dispatcher) for `types` in a child process;
    whether its machine code is now in the disk cache."""
    texts = {name: sys.modules[name].__chainjit_text__ for name in kernel_modules}
    module = sys.modules[driver.py_func.__module__]
    request = {"kernels": texts, "driver": module.__chainjit_text__, "types": types}
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, CHAINJIT_CACHE_DIR=str(cache_dir()))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with tempfile.NamedTemporaryFile("wb", suffix=".pkl", delete=False) as f:
        pickle.dump(request, f)
    try:
        done = subprocess.run([sys.executable, "-m", "runtime.execution.compile_worker", f.name],
                              env=env, capture_output=True, timeout=TIMEOUT_S, check=False)
        return done.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        os.unlink(f.name)


def main(path: str) -> int:
    from runtime.execution.linking import ensure_compiled

    with open(path, "rb") as f:
        request = pickle.load(f)
    for text in request["kernels"].values():
        load_module(text, KERNEL_PREFIX)
    driver = load_module(request["driver"], GENERATED_PREFIX).driver
    ensure_compiled(driver, request["types"], typed=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
