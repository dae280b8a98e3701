"""Focused benchmark of workload 1 (the elementwise chain), value and gradient w.r.t. x.

    .venv/bin/python -m benchmarks.chain [--reps 40] [--n 4194304] [--systems chainjit,jax,numpy]
                                         [--serial]

Systems run interleaved (one call of each per round, the order rotated every round) and the
medians of the per-call times are reported, with the median of the per-round ratios to
chainjit. "chainjit-serial" is chainjit with the prange threshold raised above n (one
thread), built in the same process, so threading's gain or loss shows in the same run.
Also prints the chainjit compile time (trace + codegen + Numba) of each variant; run with a
fresh CHAINJIT_CACHE_DIR / NUMBA_CACHE_DIR to see cold compiles.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.reference import chain_vg
from benchmarks.workloads import make_loss


def chainjit_step(x: np.ndarray, threshold: int | None = None):
    import compiler.codegen.loops as kernels
    from compiler import compile, nn, value_and_grad

    old = getattr(kernels, "PARALLEL_MIN_SIZE", None)  # None: a version without prange
    if threshold is not None and old is not None:
        kernels.PARALLEL_MIN_SIZE = threshold
    try:
        f = compile(value_and_grad(make_loss("chain", nn)))
        t0 = time.perf_counter()
        f(x)
        print(f"  chainjit compile (prange threshold {getattr(kernels, 'PARALLEL_MIN_SIZE', '-')}):"
              f" {time.perf_counter() - t0:.2f} s")
    finally:
        if old is not None:
            kernels.PARALLEL_MIN_SIZE = old
    return lambda: f(x)


def jax_step(x: np.ndarray):
    import jax

    from benchmarks.systems.jax_sys import chain_loss  # sets the CPU platform on import

    f = jax.jit(jax.value_and_grad(chain_loss))
    xj = jax.device_put(x)

    def run():
        v, g = f(xj)
        g.block_until_ready()
        return v, g

    return run


def numpy_step(x: np.ndarray):
    def run():  # the hand-written reference: float32 in, float32 out (NumPy 2 promotion)
        value, grads = chain_vg({"x": x})
        return value, grads["x"]

    return run


BUILDERS = {"chainjit": chainjit_step, "jax": jax_step, "numpy": numpy_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--n", type=int, default=4_194_304)
    parser.add_argument("--systems", default="chainjit,chainjit-serial,jax,numpy")
    args = parser.parse_args()
    x = np.random.default_rng(0).standard_normal(args.n).astype(np.float32)
    steps = {}
    if "chainjit" in args.systems:  # one-time costs (fastmath, Numba) outside the compile times
        from compiler import compile

        compile(lambda v: np.sum(np.tanh(v) / (1 + np.exp(-v)) - np.exp(v)))(x[:1024])
    for name in args.systems.split(","):
        try:
            if name == "chainjit-serial":
                steps[name] = chainjit_step(x, threshold=args.n + 1)
            else:
                steps[name] = BUILDERS[name](x)
        except Exception as e:  # noqa: BLE001 (a missing system is reported, not fatal)
            print(f"  {name}: unavailable ({type(e).__name__}: {e})")
    ref_value, ref_dx = numpy_step(x.astype(np.float64))()
    for name, run in steps.items():  # warm up and check the answers
        for _ in range(3):
            value, dx = run()
        err = np.max(np.abs(np.asarray(dx) - ref_dx)) / np.max(np.abs(ref_dx))
        print(f"  {name}: value {float(value):.6g} (ref {ref_value:.6g}), "
              f"grad max rel err {err:.1e}")
    names = list(steps)
    times = {n: [] for n in names}
    for r in range(args.reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t0)
    base = times[names[0]]
    print(f"n = {args.n}, {args.reps} interleaved rounds; median ms, ratio to {names[0]}:")
    for name in names:
        ratio = statistics.median(t / b for t, b in zip(times[name], base))
        print(f"  {name:16s} {1e3 * statistics.median(times[name]):8.2f} ms"
              f"   min {1e3 * min(times[name]):7.2f}   x{ratio:5.2f}")


if __name__ == "__main__":
    main()
