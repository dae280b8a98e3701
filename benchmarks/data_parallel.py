"""Data-parallel benchmark rows (issue 19), on localhost ranks launched with the venv's mpiexec.

    .venv/bin/python benchmarks/data_parallel.py [--rounds 5] [--steps 100]

Two floors, each measured in alternating rounds (one job of each kind per round, the first
kind rotating), medians and minimums over rounds:

1. bandwidth: an in-place MPI_Allreduce of one float32 buffer on 2 ranks, (a) bare mpi4py
   `comm.Allreduce(IN_PLACE, buf)`, (b) the kernel the compiled step calls
   (compiler/kernels/mpi.py's `mpi_allreduce`, called from compiled code), (c) a whole
   compiled `all_reduce(x)` call (pack into its buffer, reduce, return a fresh array);
   the floor: (b) >= 90% of (a)'s bandwidth.
2. the MLP 784-512-512-10 SGD step: 1 process x batch 128 against 2 ranks x batch 64
   (data_parallel=True, one thread a rank), and the bare allreduce of its 669,706 gradients
   (2.7 MB); the floor: 2 x 64 <= 1 x 128 + allreduce.

The worker half of this file runs inside each rank (`--worker KIND`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

MLP = (784, 512, 512, 10)
GRADS = sum(a * b + b for a, b in zip(MLP, MLP[1:]))  # 669,706 float32
SIZES = {"MLP gradients (2.7 MB)": GRADS + 2, "4 MiB": 1 << 20}


def _timed(fn, reps: int, sync) -> list[float]:
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def worker_bandwidth(reps: int) -> dict:
    from compiler import all_reduce, compile
    from compiler.kernels.mpi import mpi_allreduce
    from runtime import distributed

    world = distributed.world()
    comm, mpi = world.comm, world.mpi
    out = {}
    for label, size in SIZES.items():
        buf = np.ones(size, np.float32)
        f = compile(lambda x: all_reduce(x))
        f(buf)
        mpi_allreduce(buf, 0)
        rows = {"mpi4py": [], "kernel": [], "compiled all_reduce": []}
        for _ in range(3):  # interleaved within the job too
            rows["mpi4py"] += _timed(lambda: comm.Allreduce(mpi.IN_PLACE, buf, mpi.SUM),
                                     reps, comm.Barrier)
            rows["kernel"] += _timed(lambda: mpi_allreduce(buf, 0), reps, comm.Barrier)
            rows["compiled all_reduce"] += _timed(lambda: f(buf), reps, comm.Barrier)
            buf[:] = 1.0  # keep the values finite
        out[label] = {k: statistics.median(v) for k, v in rows.items()}
        out[label]["bytes"] = size * 4
    return out


def _mlp(batch: int, data_parallel: bool):
    from compiler import nn
    from runtime import optim, train_step

    def loss(params, x, y):
        h = np.maximum(x @ params["w1"] + params["b1"], 0.0)
        h = np.maximum(h @ params["w2"] + params["b2"], 0.0)
        return nn.cross_entropy(h @ params["w3"] + params["b3"], y)

    rng = np.random.default_rng(0)
    params = {}
    for k, (a, b) in enumerate(zip(MLP, MLP[1:]), 1):
        params[f"w{k}"] = rng.normal(0, (2 / a) ** 0.5, (a, b)).astype(np.float32)
        params[f"b{k}"] = np.zeros(b, np.float32)
    x = rng.normal(size=(batch, MLP[0])).astype(np.float32)
    y = rng.integers(0, MLP[-1], batch)
    step = train_step(loss, optim.SGD(0.01), data_parallel=data_parallel, wait=True)
    return lambda: step(params, x, y)


def worker_step(batch: int, data_parallel: bool, steps: int) -> dict:
    from runtime import distributed

    run = _mlp(batch, data_parallel)
    for _ in range(5):
        run()
    distributed.barrier()
    times = _timed(run, steps, lambda: None)  # the step's own allreduce keeps ranks in step
    return {"step": statistics.median(times), "step_min": min(times)}


def worker(kind: str, reps: int, steps: int) -> None:
    from runtime import distributed

    if kind == "bandwidth":
        result = worker_bandwidth(reps)
    elif kind == "single":
        result = worker_step(128, False, steps)
    else:
        result = worker_step(64, True, steps)
    if distributed.is_root():
        print("RESULT " + json.dumps(result), flush=True)


def launch(kind: str, ranks: int, args, threads: int) -> dict:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    env = dict(os.environ, CHAINJIT_WAIT="1", NUMBA_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    done = subprocess.run([str(mpiexec), "-n", str(ranks), sys.executable, __file__,
                           "--worker", kind, "--reps", str(args.reps), "--steps",
                           str(args.steps)], env=env, capture_output=True, text=True,
                          timeout=600)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{kind} failed:\n{done.stdout}\n{done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.reps, args.steps)
    jobs = {"bandwidth": (2, 1), "single 1x128 (2 threads)": (1, 2),
            "single 1x128 (1 thread)": (1, 1), "parallel 2x64": (2, 1)}
    kinds = {"bandwidth": "bandwidth", "single 1x128 (2 threads)": "single",
             "single 1x128 (1 thread)": "single", "parallel 2x64": "parallel"}
    results: dict[str, list] = {name: [] for name in jobs}
    names = list(jobs)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            ranks, threads = jobs[name]
            results[name].append(launch(kinds[name], ranks, args, threads))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    report(results)


def report(results: dict) -> None:
    print("\n## allreduce bandwidth, 2 local ranks (median of per-round medians; min)\n")
    print("| buffer | bare mpi4py | in the compiled step (kernel) | ratio | "
          "compiled all_reduce(x) call |")
    print("|---|---|---|---|---|")
    for label in SIZES:
        rows = [r[label] for r in results["bandwidth"]]
        gb = rows[0]["bytes"] / 1e9

        def cell(key):
            ts = [row[key] for row in rows]
            return statistics.median(ts), min(ts)

        (m4, m4min), (k, kmin), (c, cmin) = cell("mpi4py"), cell("kernel"), \
            cell("compiled all_reduce")
        print(f"| {label} | {m4 * 1e3:.3f} ms ({gb / m4:.2f} GB/s; min {m4min * 1e3:.3f}) | "
              f"{k * 1e3:.3f} ms ({gb / k:.2f} GB/s; min {kmin * 1e3:.3f}) | "
              f"{m4 / k:.0%} | {c * 1e3:.3f} ms (min {cmin * 1e3:.3f}) |")
    print("\n## MLP 784-512-512-10 SGD step (median of per-round medians; min)\n")
    print("| job | step |")
    print("|---|---|")
    for name in ("single 1x128 (2 threads)", "single 1x128 (1 thread)", "parallel 2x64"):
        ts = [r["step"] for r in results[name]]
        mins = [r["step_min"] for r in results[name]]
        print(f"| {name} | {statistics.median(ts) * 1e3:.3f} ms (min {min(mins) * 1e3:.3f}) |")
    grads = statistics.median(r["MLP gradients (2.7 MB)"]["mpi4py"]
                              for r in results["bandwidth"])
    print(f"| bare allreduce of the gradients, 2 ranks | {grads * 1e3:.3f} ms |")
    for name in ("single 1x128 (2 threads)", "single 1x128 (1 thread)"):
        budget = statistics.median(r["step"] for r in results[name]) + grads
        got = statistics.median(r["step"] for r in results["parallel 2x64"])
        print(f"\nfloor vs {name}: 2x64 {got * 1e3:.3f} ms <= {budget * 1e3:.3f} ms "
              f"(1x128 + allreduce): {'met' if got <= budget else 'NOT met'}")


if __name__ == "__main__":
    main()
