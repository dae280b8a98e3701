"""Calls between compiled modules (runtime/execution/linking.py): a driver's cached machine code is
loaded only once the kernels it calls are registered (an unregistered symbol would crash the
process), whatever is missing from the cache; a kernel compiled for one model is loaded, not
compiled, by the next."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = textwrap.dedent("""
    import numpy as np
    from compiler import compile
    f = compile(lambda x, w: np.sum(np.tanh(x @ w) * 2.0))
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    w = np.ones((4, 5), np.float32)
    print(repr(float(f(x, w))))
""")


def _run(cache: Path) -> float:
    env = dict(os.environ, CHAINJIT_CACHE_DIR=str(cache), NUMBA_CACHE_DIR=str(cache / "numba"),
               PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]  # a crash (no links) exits -11
    return float(done.stdout.strip().splitlines()[-1])


def test_a_cached_driver_without_its_links_file_is_compiled_not_loaded(tmp_path):
    want = float(np.sum(np.tanh((np.arange(12, dtype=np.float32).reshape(3, 4) / 10)
                                @ np.ones((4, 5), np.float32)) * 2.0))
    assert abs(_run(tmp_path) - want) < 1e-4  # compiles, writes the cache and links files
    links = list(tmp_path.glob("chainjit_gen_*.links"))
    assert links
    for path in links:
        path.unlink()
    assert abs(_run(tmp_path) - want) < 1e-4  # the driver is cached, its links are not
    assert list(tmp_path.glob("chainjit_gen_*.links"))  # written again
    for path in tmp_path.glob("chainjit_gen_*.links"):
        path.write_bytes(b"not a pickle")
    assert abs(_run(tmp_path) - want) < 1e-4  # unreadable: compiled again, with a warning


def test_a_kernel_another_model_compiled_is_loaded_not_compiled():
    from compiler import compile
    from tests.compiler.test_codegen_outline import _Compiles

    x = np.random.default_rng(3).standard_normal((6, 4)).astype(np.float32)
    w = np.ones((4, 3), np.float32)
    first = compile(lambda x, w: np.tanh(x @ w + 1.5))
    first(x, w)
    shared = set(first.trace(x, w).executable.kernel_modules)
    # other names, another batch size, and a second output: a new driver, the same kernels
    second = compile(lambda inputs, weights: (np.tanh(inputs @ weights + 1.5), inputs + 2.0))
    with _Compiles() as compiles:
        second(x[:5], w)
    assert shared <= set(second.trace(x[:5], w).executable.kernel_modules)
    assert not shared & set(compiles.modules)  # loaded, not compiled again
