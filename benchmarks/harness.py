"""Timing harness: correctness checks, timing in worker processes, machine bound (the
compile_latency workload is latency.py).

Method: every system runs in its own worker process (``worker.py``), one per system and workload,
because systems sharing a process slow each other down: after each call OpenBLAS's worker
threads (numpy's and scipy's copies, used by NumPy and chainjit) busy-wait, PyTorch's OpenMP
threads and XLA's Eigen pool spin, and on a 2-core machine that inflated every system's median
2-3x and made it depend on which other systems were loaded (mlp_large, chainjit / JAX / PyTorch
median: 5.5 / 4.6 / 4.8 ms each alone, 14.6 / 8.8 / 22 ms all four in one process).

The workers are started and set up one at a time (so compiles do not overlap): each checks its
step against the float64 run of the NumPy reference (loss, gradients, and the parameters after one
step) and reports, or is killed when it does not report within ``SETUP_LIMIT_S``. Then the
systems that passed are timed side by side in rounds: in every round each worker, in turn (the
first one rotating every round), runs one untimed step and then a batch of steps of about
``BATCH_S`` (at least one), each timed with ``time.perf_counter``; after each batch the harness
waits until that worker's threads are quiet (``Worker.settle``), because OpenBLAS's threads
busy-wait ~0.1 s after the last call, which would slow the next system's whole batch. Noise
lasting longer than a round slows every system alike. Reported: median and min over all timed
steps, and per pair of systems the median over rounds of the ratio of their round medians.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from benchmarks import reference as ref
from benchmarks import systems as sysmod
from benchmarks.report import one_line
from benchmarks.worker import WorkerError, start_worker
from benchmarks.workloads import ADAM_LR, SGD_LR, WORKLOADS

ROOT = Path(__file__).resolve().parent.parent
RTOL = 1e-3
SETUP_LIMIT_S = 180.0  # per system and workload: import, compile, check, first step
BATCH_S = 0.05  # a timed batch of steps lasts about this long (at least one step)


def short_error(exc: BaseException, limit: int = 90) -> str:
    return one_line(f"{type(exc).__name__}: {exc}", limit)


# ----------------------------------------------------------------------------- machine bound


def _best_of(run, reps: int) -> float:
    run()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_machine(quick: bool = False) -> dict:
    """Peak float32 matmul FLOP/s and copy bandwidth: the peak pseudo-system's units
    (systems/peak_sys.py), best of several runs."""
    peak = sysmod.load(sysmod.PEAK)
    reps = 5 if quick else 15
    matmul, flops = peak.matmul_unit()
    copy, moved = peak.copy_unit(peak.COPY_BYTES // (2 if quick else 1))
    rates = {"np.dot 1024x1024": flops / _best_of(matmul, reps)}
    try:  # the BLAS chainjit's kernels call (SciPy's), at two sizes: the best BLAS here
        from runtime.execution.machine import sgemm_gflops

        for n in (1024, 2048):
            rates[f"SciPy sgemm {n}x{n}"] = 1e9 * sgemm_gflops(n, repeat=3 if quick else 5)
    except ImportError:
        pass
    source = max(rates, key=rates.get)
    return {"peak_flops": rates[source], "peak_source": source,
            "copy_bandwidth": moved / _best_of(copy, reps)}


def _bound_terms(workload: str, machine: dict) -> dict[str, float]:
    """The workload's FLOPs and bytes at the machine's rates, in seconds."""
    w = WORKLOADS[workload]
    return {"flops": w.flops / machine["peak_flops"], "bytes": w.bytes / machine["copy_bandwidth"]}


def bound_seconds(workload: str, machine: dict) -> float:
    """The burst bound: the workload's work at the best rates measured between workloads."""
    return max(_bound_terms(workload, machine).values())


def bound_alongside(workload: str, peak: dict, machine: dict) -> float | None:
    """The bound at the peak pseudo-system's median rate in the workload's own rounds (the
    conditions the steps' medians were measured under). None if the peak was not timed, or
    timed the other kind of work than the one that sets the burst bound."""
    peak_sys = sysmod.load(sysmod.PEAK)
    kind = peak_sys.unit_kind(workload)
    terms = _bound_terms(workload, machine)
    if "median_s" not in peak or terms[kind] < max(terms.values()):
        return None
    w = WORKLOADS[workload]
    work = w.flops if kind == "flops" else w.bytes
    return work / peak_sys.UNIT_WORK[kind] * peak["median_s"]


# ----------------------------------------------------------------------------- reference + checks


def copy_inputs(workload: str, dtype=np.float32):
    data, params = WORKLOADS[workload].make()

    def cast(a):
        return a.astype(dtype) if a.dtype.kind == "f" else a.copy()

    return {k: cast(v) for k, v in data.items()}, {k: cast(v) for k, v in params.items()}


def reference_result(workload: str, activation: str = "relu") -> dict:
    """Loss, gradients and one-step-updated params from the reference code run in float64
    (``activation="tanh"``: compile_latency's edit of the MLPs and the CNN)."""
    data, params = copy_inputs(workload, np.float64)
    p0 = {k: v.copy() for k, v in params.items()}
    loss, grads = ref.value_and_grad(workload, params, data, activation)
    kind = WORKLOADS[workload].kind
    if kind == "sgd":
        ref.sgd_update(params, grads, SGD_LR)
    elif kind == "adam":
        ref.Adam(params, ADAM_LR).update(params, grads)
    return {"loss": float(loss), "grads": grads, "p0": p0, "p1": params}


def _scaled_err(a, b, rtol=RTOL):
    """max |a-b| / (rtol*|b| + 0.1*rtol*max|b|): <= 1 passes."""
    a = np.asarray(a, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape {a.shape} != reference {b.shape}")
    atol = 0.1 * rtol * float(np.max(np.abs(b))) + 1e-30
    return float(np.max(np.abs(a - b) / (rtol * np.abs(b) + atol)))


def check_value_and_grad(loss, grads, r) -> str | None:
    if not abs(loss - r["loss"]) <= RTOL * abs(r["loss"]) + 1e-6:
        return f"loss {loss:.6g} != reference {r['loss']:.6g}"
    missing = set(r["grads"]) - set(grads)
    if missing:
        return f"missing grads {sorted(missing)}"
    for k, g in r["grads"].items():
        err = _scaled_err(grads[k], g)
        if err > 1:
            return f"grad {k}: error {err:.3g}x tolerance"
    return None


def check_step(params1, r) -> str | None:
    """Parameter change of one step vs the reference change (<= 0.1% of elements may differ,
    for Adam's near-zero gradients where the update is ~ sign(g))."""
    for k, p1 in r["p1"].items():
        d_ref = p1 - r["p0"][k]
        d = np.asarray(params1[k], np.float64) - r["p0"][k]
        tol = 1e-2 * np.abs(d_ref) + 1e-3 * np.max(np.abs(d_ref)) + 1e-12
        frac = float(np.mean(np.abs(d - d_ref) > tol))
        if frac > 1e-3:
            return f"step {k}: {100 * frac:.2g}% of entries differ from the reference update"
    return None


def setup_system(name: str, workload: str, r: dict) -> tuple[dict, object]:
    """Import, build and check one system and run its first step (in its worker process).
    Returns (info, step or None)."""
    info: dict = {"status": "ok"}
    try:
        mod = sysmod.load(name)
    except ModuleNotFoundError as e:
        if e.name and "." not in e.name:  # the system's library itself is not installed
            return {"status": f"missing ({e.name})"}, None
        return {"status": "error: " + short_error(e)}, None
    except Exception as e:  # noqa: BLE001
        return {"status": "error: " + short_error(e)}, None
    stage = "setup"
    try:
        data, params = copy_inputs(workload)
        t0 = time.perf_counter()
        step = mod.make_step(workload, data, params)
        if step.value_and_grad is None:  # the peak pseudo-system: nothing to check
            info["setup_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            step.run()
            info["first_call_s"] = time.perf_counter() - t0
            return info, step
        stage = "value_and_grad"
        loss, grads = step.value_and_grad()
        info["setup_s"] = time.perf_counter() - t0
        problem = check_value_and_grad(loss, grads, r)
        if problem is None:
            stage = "first step"
            t0 = time.perf_counter()
            loss1 = step.run()
            info["first_call_s"] = time.perf_counter() - t0
            if not abs(loss1 - r["loss"]) <= RTOL * abs(r["loss"]) + 1e-6:
                problem = f"step loss {loss1:.6g} != reference {r['loss']:.6g}"
            elif step.get_params is not None:
                problem = check_step(step.get_params(), r)
        if problem is not None:
            return {"status": "error: mismatch: " + problem}, None
    except Exception as e:  # noqa: BLE001
        if os.environ.get("BENCH_TRACEBACK"):
            traceback.print_exc()
        return {"status": f"error: {stage}: " + short_error(e)}, None
    info["check"] = "passed"
    return info, step


# ----------------------------------------------------------------------------- timing


def time_rounds(
    workers: dict,
    budget_s: float,
    min_rounds: int,
    max_rounds: int,
    info: dict,
    warmup: int,
    warmup_limit_s: float,
) -> tuple[dict, dict]:
    """Time every worker's step in rounds; returns ({name: [(round, times)]}, {name: batch})."""
    batch, step_s = {}, {}
    for name, w in workers.items():
        try:
            step_s[name] = min(w.run(warmup, warmup_limit_s))
        except WorkerError as e:
            info[name] = {"status": f"error: warmup: {e}"}
            continue
        w.settle()
        batch[name] = max(1, round(BATCH_S / max(step_s[name], 1e-9)))
    names = list(batch)
    per_round = {n: [] for n in names}
    t0 = time.perf_counter()
    r = 0
    while per_round and r < max_rounds and (r < min_rounds or time.perf_counter() - t0 < budget_s):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if name not in per_round:
                continue
            try:
                expected = (batch[name] + 1) * step_s[name]
                per_round[name].append((r, workers[name].run(batch[name], 30 + 20 * expected)))
            except WorkerError as e:
                info[name] = {"status": f"error: timing: {e}"}
                del per_round[name]
                continue
            workers[name].settle()
        r += 1
    return per_round, batch


def run_workload(workload: str, systems: list[str], quick: bool) -> dict:
    """Set up and time every system, each in its own worker process; the machine bound
    (`bound_s`, `x_bound`) is added by run.py from the best machine measurement of the run."""
    limit = SETUP_LIMIT_S / 2 if quick else SETUP_LIMIT_S
    budget, min_rounds, max_rounds, warmup = (0.3, 3, 10, 1) if quick else (20.0, 10, 3000, 3)
    info, workers = {}, {}
    try:
        # the peak pseudo-system is timed in the rounds too: the bound under the same conditions
        for name in [*systems, sysmod.PEAK]:  # one at a time: compiles do not overlap
            print(f"  [{workload}] setting up {name} ...", file=sys.stderr, flush=True)
            info[name], w = start_worker(name, workload, limit)
            if w is not None:
                workers[name] = w
            else:
                print(f"  [{workload}] {name}: {info[name]['status']}", file=sys.stderr, flush=True)
        per_round, batch = time_rounds(workers, budget, min_rounds, max_rounds, info, warmup, limit)
    finally:
        for w in workers.values():
            w.close()
    round_med = {n: {r: float(np.median(ts)) for r, ts in rs} for n, rs in per_round.items()}
    for name, rs in per_round.items():
        ts = [t for _, b in rs for t in b]
        med = float(np.median(ts))
        info[name].update(
            median_s=med,
            min_s=float(np.min(ts)),
            reps=len(ts),
            rounds=len(rs),
            batch=batch[name],
            steps_per_s=1.0 / med,
            times_s=[round(t, 7) for t in ts],
        )
    peak = info.pop(sysmod.PEAK)
    for name, d in info.items():
        if "median_s" in d:
            # paired: median over rounds of (other's round median / this system's round median),
            # which cancels noise that lasts longer than one round
            mine = round_med[name]
            d["speedup_vs"] = {
                o: float(np.median([round_med[o][r] / mine[r] for r in mine if r in round_med[o]]))
                for o in systems
                if o != name and o in round_med and set(round_med[o]) & set(mine)
            }
            d["speedup_vs_of_medians"] = {
                o: info[o]["median_s"] / d["median_s"] for o in d["speedup_vs"]
            }
    return {"systems": info, "peak": peak, "description": WORKLOADS[workload].description}
