"""Timing harness: correctness checks, interleaved timing, machine bound, compile latency.

Method: each system's step is set up and checked against the float64 run of the NumPy reference
(loss, gradients, and the parameters after one step); then all systems that passed are warmed up
and timed interleaved (round-robin, the starting system rotating every repetition) with
``time.perf_counter``, so that a noisy machine slows every system alike. Reported: median and min.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from benchmarks import reference as ref
from benchmarks import systems as sysmod
from benchmarks.workloads import ADAM_LR, SGD_LR, WORKLOADS

ROOT = Path(__file__).resolve().parent.parent
RTOL = 1e-3
SETUP_LIMIT_S = 90.0  # per system and workload: import, compile, check, first step
PROBE_SYSTEMS = {"chainjit"}


def one_line(msg: str, limit: int = 110) -> str:
    """A message fit for a table cell: one line, no pipes, at most ``limit`` characters."""
    msg = " ".join(str(msg).replace("|", "/").split())
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def short_error(exc: BaseException, limit: int = 90) -> str:
    return one_line(f"{type(exc).__name__}: {exc}", limit)


# ----------------------------------------------------------------------------- machine bound


def measure_machine(quick: bool = False) -> dict:
    """Peak float32 matmul FLOP/s (np.dot, best of several) and copy bandwidth (np.copyto)."""
    n = 1024
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    c = np.empty((n, n), np.float32)
    np.dot(a, b, out=c)
    best = float("inf")
    for _ in range(5 if quick else 15):
        t0 = time.perf_counter()
        np.dot(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    flops = 2 * n**3 / best
    src = np.ones(32 * 1024 * 1024 // 4 * (1 if quick else 2), np.float32)  # 32 / 64 MB
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float("inf")
    for _ in range(5 if quick else 15):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    bw = 2 * src.nbytes / best  # read + write
    return {"peak_flops": flops, "copy_bandwidth": bw}


def bound_seconds(workload: str, machine: dict) -> float:
    w = WORKLOADS[workload]
    return max(w.flops / machine["peak_flops"], w.bytes / machine["copy_bandwidth"])


# ----------------------------------------------------------------------------- reference + checks


def copy_inputs(workload: str, dtype=np.float32):
    data, params = WORKLOADS[workload].make()

    def cast(a):
        return a.astype(dtype) if a.dtype.kind == "f" else a.copy()

    return {k: cast(v) for k, v in data.items()}, {k: cast(v) for k, v in params.items()}


def reference_result(workload: str) -> dict:
    """Loss, gradients and one-step-updated params from the reference code run in float64."""
    data, params = copy_inputs(workload, np.float64)
    p0 = {k: v.copy() for k, v in params.items()}
    loss, grads = ref.VALUE_AND_GRAD[workload](params, data)
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


class SetupTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise SetupTimeout in the main thread after ``seconds`` (SIGALRM; no-op elsewhere)."""
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def handler(signum, frame):
        raise SetupTimeout(f"timed out after {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def probe_compile(name: str, workload: str, limit_s: float) -> str | None:
    """Compile ``workload`` for ``name`` in a child process with a time limit; an error or None."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "latency_child.py"), name, workload,
             "--probe"],
            cwd=ROOT, capture_output=True, text=True, timeout=limit_s, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"error: compile did not finish in {limit_s:.0f} s (probe process killed)"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return "error: probe: " + one_line(err, 100)
    out = json.loads(lines[-1])
    if "error" in out:
        return out["error"] if out.get("missing") else "error: " + one_line(out["error"], 100)
    print(f"  [{workload}] {name} probe ok in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return None


def setup_system(name: str, workload: str, r: dict, limit_s: float = 0) -> tuple[dict, object]:
    """Import, build, check and warm up one system. Returns (info, step or None).

    A system in ``PROBE_SYSTEMS`` is first compiled in a child process with a hard time limit
    (LLVM can sit in native code where no in-process timeout reaches it)."""
    if name in PROBE_SYSTEMS and limit_s > 0:
        problem = probe_compile(name, workload, limit_s)
        if problem is not None:
            return {"status": problem}, None
    try:
        with time_limit(2 * limit_s):  # after a successful probe: mostly a cache hit
            return _setup_system(name, workload, r)
    except SetupTimeout as e:
        return {"status": f"error: setup {e}"}, None


def _setup_system(name: str, workload: str, r: dict) -> tuple[dict, object]:
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


def time_interleaved(
    steps: dict, budget_s: float, min_reps: int, max_reps: int, info: dict, warmup: int = 2
):
    names = list(steps)
    warm = {}
    for name in list(names):
        try:
            ts = []
            for _ in range(warmup):
                t0 = time.perf_counter()
                steps[name].run()
                ts.append(time.perf_counter() - t0)
            warm[name] = min(ts)
        except Exception as e:  # noqa: BLE001
            info[name] = {"status": "error: warmup: " + short_error(e)}
            names.remove(name)
    if not names:
        return {}
    round_s = sum(warm[n] for n in names)
    reps = int(min(max_reps, max(min_reps, budget_s / max(round_s, 1e-9))))
    times = {n: [] for n in names}
    gc.collect()
    t_end = time.perf_counter() + 2 * budget_s  # a slow system cuts the repetitions short
    for r in range(reps):
        if r >= min(3, min_reps) and time.perf_counter() > t_end:
            break
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if name not in times:
                continue
            try:
                t0 = time.perf_counter()
                steps[name].run()
                times[name].append(time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001
                info[name] = {"status": "error: timing: " + short_error(e)}
                del times[name]
    return times


def run_workload(workload: str, systems: list[str], quick: bool) -> dict:
    """Set up and time every system; the machine bound (`bound_s`, `x_bound`) is added by
    run.py from the best machine measurement of the whole run."""
    r = reference_result(workload)
    info, steps = {}, {}
    for name in systems:
        print(f"  [{workload}] setting up {name} ...", file=sys.stderr, flush=True)
        limit = SETUP_LIMIT_S / 2 if quick else SETUP_LIMIT_S
        info[name], step = setup_system(name, workload, r, limit)
        if step is not None:
            steps[name] = step
        else:
            print(f"  [{workload}] {name}: {info[name]['status']}", file=sys.stderr, flush=True)
    budget, min_reps, max_reps, warmup = (0.3, 3, 10, 1) if quick else (20.0, 10, 3000, 3)
    times = time_interleaved(steps, budget, min_reps, max_reps, info, warmup)
    for name, ts in times.items():
        med = float(np.median(ts))
        info[name].update(
            median_s=med,
            min_s=float(np.min(ts)),
            reps=len(ts),
            steps_per_s=1.0 / med,
        )
    for name, d in info.items():
        if "median_s" in d:
            # paired: median over repetitions of (other's time / this system's time) in the same
            # round, which cancels noise that lasts longer than one round
            d["speedup_vs"] = {
                o: float(np.median([b / a for a, b in zip(times[name], times[o])]))
                for o in systems
                if o != name and o in times
            }
            d["speedup_vs_of_medians"] = {
                o: info[o]["median_s"] / d["median_s"] for o in d["speedup_vs"]
            }
            d["times_s"] = [round(t, 7) for t in times[name]]
    return {"systems": info, "description": WORKLOADS[workload].description}


# ----------------------------------------------------------------------------- compile latency


def _latency_once(name: str, cache_dir: str, ref_loss: float) -> float:
    env = dict(os.environ, CHAINJIT_CACHE_DIR=cache_dir, BENCH_CACHE_DIR=cache_dir)
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "latency_child.py"), name],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=SETUP_LIMIT_S, check=False,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(err[:120])
    out = json.loads(lines[-1])
    if "error" in out:
        raise (ModuleNotFoundError if out.get("missing") else RuntimeError)(out["error"])
    if not abs(out["loss"] - ref_loss) <= RTOL * abs(ref_loss):
        raise RuntimeError(f"mismatch: first loss {out['loss']:.6g} != reference {ref_loss:.6g}")
    return out["t_first"] - t0


def compile_latency(systems: list[str], quick: bool) -> dict:
    """Process start -> first mlp_large training-step result, cold (fresh cache dir) and warm."""
    res = {}
    reps = 1 if quick else 2
    ref_loss = reference_result("mlp_large")["loss"]
    for name in systems:
        print(f"  [compile_latency] {name} ...", file=sys.stderr, flush=True)
        cold, warm = [], []
        try:
            for _ in range(reps):
                with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as d:
                    cold.append(_latency_once(name, d, ref_loss))
                    warm.append(_latency_once(name, d, ref_loss))
            res[name] = {
                "status": "ok",
                "cold_s": float(np.median(cold)),
                "warm_s": float(np.median(warm)),
                "reps": reps,
            }
        except ModuleNotFoundError as e:
            res[name] = {"status": str(e)}
        except Exception as e:  # noqa: BLE001
            res[name] = {
                "status": "error: " + (str(e) if isinstance(e, RuntimeError) else short_error(e))
            }
    return res
