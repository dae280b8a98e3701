"""Per-call overhead and latency of compiled functions (a micro benchmark, not a test).

    .venv/bin/python benchmarks/overhead.py            # overhead + small MLP + large MLP latency

1. Overhead: a compiled tiny function (`x * 2 + 1` on 4 floats) against a hand-written
   @njit function doing the same work; the difference is chainjit's Python-side call path.
2. Small MLP (64-64-10, batch 32): value_and_grad as one call; an SGD `train_step` against
   its compiled call alone (interleaved, medians): the Python the step adds per call.
3. Large MLP (784-512-512-10, batch 128) value_and_grad: cold compile in a fresh cache, then
   a new process with the warm disk cache, timed from interpreter start to first result.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numba
import numpy as np

from compiler import compile, value_and_grad


def per_call_us(fn, *args, calls: int = 20000, repeats: int = 7) -> float:
    fn(*args)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn(*args)
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


@numba.njit(cache=True)
def _hand_tiny(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = x[i] * np.float32(2.0) + np.float32(1.0)
    return out


def overhead() -> None:
    x = np.ones(4, np.float32)
    tiny = compile(lambda x: x * 2.0 + 1.0)
    hand = per_call_us(_hand_tiny, x)
    ours = per_call_us(tiny, x)
    print(f"tiny fn: hand-written @njit {hand:.2f} us/call, chainjit {ours:.2f} us/call, "
          f"overhead {ours - hand:.2f} us (target <= 10 us)")


def mlp_loss(params, x, y):
    h = np.maximum(x @ params["w1"] + params["b1"], 0.0)
    logits = h @ params["w2"] + params["b2"]
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    logp = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return -np.mean(np.sum(logp * y, axis=1))


def mlp_data(sizes, batch, seed=0):
    rng = np.random.default_rng(seed)
    d, h, k = sizes
    params = {"w1": (rng.standard_normal((d, h)) * 0.05).astype(np.float32),
              "b1": np.zeros(h, np.float32),
              "w2": (rng.standard_normal((h, k)) * 0.05).astype(np.float32),
              "b2": np.zeros(k, np.float32)}
    x = rng.standard_normal((batch, d)).astype(np.float32)
    y = np.eye(k, dtype=np.float32)[rng.integers(0, k, batch)]
    return params, x, y


def small_mlp() -> None:
    from runtime import optim, train_step

    params, x, y = mlp_data((64, 64, 10), 32)
    fwd = compile(mlp_loss)
    step = compile(value_and_grad(mlp_loss))
    print(f"small MLP 64-64-10 b32: forward {per_call_us(fwd, params, x, y, calls=5000):.1f} us, "
          f"value_and_grad {per_call_us(step, params, x, y, calls=5000):.1f} us "
          "(JAX jit step ~39 us)")
    sgd = train_step(mlp_loss, optim.SGD(0.01))
    sgd(params, x, y)  # params and state are donated: updated in place, no copies
    raw, full = interleaved(sgd.compiled, (params, sgd.state, x, y), sgd, (params, x, y))
    print(f"small MLP SGD step: compiled call {raw:.1f} us (target <= 16 us), train_step "
          f"{full:.1f} us: +{full - raw:.1f} us of checks (target <= 5 us)")
    labels = y.argmax(axis=1)
    ce = train_step(mlp_cross_entropy, optim.SGD(0.01))
    ce(params, x, labels)
    raw, full = interleaved(ce.compiled, (params, ce.state, x, labels), ce, (params, x, labels))
    print(f"small MLP SGD step, cross_entropy on int labels: compiled call {raw:.1f} us, "
          f"train_step {full:.1f} us: +{full - raw:.1f} us (label range check included)")


def interleaved(a, a_args, b, b_args, calls: int = 200, rounds: int = 50) -> tuple[float, float]:
    """Median us/call of `a` and of `b`, measured in alternating blocks (a loaded machine
    slows both alike), the difference being the median of the per-round differences."""
    times_a, diffs = [], []
    for _ in range(rounds):
        ta, tb = (_block(f, args, calls) for f, args in ((a, a_args), (b, b_args)))
        times_a.append(ta)
        diffs.append(tb - ta)
    median_a = statistics.median(times_a)
    return median_a, median_a + statistics.median(diffs)


def _block(fn, args, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter() - start) / calls * 1e6


def mlp_cross_entropy(params, x, labels):
    from compiler import nn

    h = np.maximum(x @ params["w1"] + params["b1"], 0.0)
    return nn.cross_entropy(h @ params["w2"] + params["b2"], labels)


LARGE_CHILD = """
import time; t0 = time.perf_counter()
import sys; sys.path.insert(0, {root!r})
import numpy as np
from benchmarks.overhead import mlp_data, mlp_loss
from compiler import compile, value_and_grad
params, x, y = mlp_data((784, 512, 10), 128)
t1 = time.perf_counter()
value, grads = compile(value_and_grad(mlp_loss))(params, x, y)
print(f"{{time.perf_counter() - t0:.3f}} {{time.perf_counter() - t1:.3f}}")
"""


def large_mlp_latency() -> None:
    folder = tempfile.mkdtemp(prefix="chainjit-bench-")
    env = {**os.environ, "CHAINJIT_CACHE_DIR": folder,
           "NUMBA_CACHE_DIR": os.path.join(folder, "numba")}
    code = LARGE_CHILD.format(root=str(ROOT))
    for label in ("cold (empty cache)", "warm disk cache, new process"):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
        wall = time.perf_counter() - start
        print(f"large MLP value_and_grad {label}: first result {wall:.2f} s from process "
              f"start (in-process {float(out[0]):.2f} s, of which compile/load "
              f"{float(out[1]):.2f} s)")


if __name__ == "__main__":
    overhead()
    small_mlp()
    large_mlp_latency()
