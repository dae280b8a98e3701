"""The compile_latency workload: the first step of every workload in fresh processes.

For each workload and system, one repetition is three child processes (``latency_child.py``)
sharing one new temporary cache folder, then (chainjit) a fourth with a folder of its own:

* ``cold``: empty caches, the first compiled step result (chainjit with ``wait=True``);
* ``warm``: a new process with the caches the cold run left;
* ``edit``: the same workload with relu replaced by tanh (``workloads.make_loss(...,
  activation="tanh")``, the same edit in every system), in the caches the relu runs left;
* ``first_result`` (chainjit only): empty caches, chainjit's default ``wait=False`` path, the
  first loss returned (by the reference interpreter while the step compiles in the
  background), the interpreter's step time until the switch, and NumPy's step for the floor.

Every child's first loss is checked against the float64 reference. Each figure is given twice:
``total_s``, from the parent starting the process to the first result (imports included), and
``step_s``, from just before the child defines the step to the first result (imports and data
excluded). Cache folders: ``CHAINJIT_CACHE_DIR`` and ``NUMBA_CACHE_DIR`` (chainjit's generated
modules and Numba's cache of chainjit's own kernel libraries: both empty when cold),
``BENCH_CACHE_DIR`` (JAX's persistent compilation cache), ``TORCHINDUCTOR_CACHE_DIR`` and
``TRITON_CACHE_DIR`` (torch.compile), and ``TMPDIR`` (Inductor's precompiled headers), all
inside the repetition's folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import SETUP_LIMIT_S, reference_result
from benchmarks.report import one_line
from benchmarks.workloads import EDITABLE

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "benchmarks" / "latency_child.py"
RTOL = 1e-3
CHILD_LIMIT_S = SETUP_LIMIT_S  # per child process
FIGURES = ("cold", "warm", "edit")
WORKLOADS = {True: ["mlp_small", "mlp_large"],  # --quick
             False: ["mlp_large", "mlp_small", "cnn", "transformer", "chain"]}
REPS = {True: 1, False: 2}  # repetitions per cell (--quick: True)
# torch.compile's cold cell takes ~30 s (Inductor's C++ compiles): one repetition in a full run,
# so that `make bench` stays within ~20 minutes
REPS_TORCH_COMPILE = {True: 1, False: 1}
# column name -> system adapter; torch eager compiles nothing, so "torch" means torch.compile
SYSTEMS = {"chainjit": "chainjit", "jax": "jax", "torch.compile": "torch_compile"}


def latency_systems(systems: list[str]) -> list[str]:
    """The compile_latency columns for the run's --systems."""
    picked = set(systems)
    if "torch" in picked:
        picked.add("torch_compile")
    return [col for col, name in SYSTEMS.items() if name in picked]


def _cache_env(folder: str, mode: str) -> dict:
    env = dict(os.environ)
    env.update(
        CHAINJIT_CACHE_DIR=os.path.join(folder, "chainjit"),
        NUMBA_CACHE_DIR=os.path.join(folder, "numba"),
        BENCH_CACHE_DIR=os.path.join(folder, "jax"),
        TORCHINDUCTOR_CACHE_DIR=os.path.join(folder, "inductor"),
        TRITON_CACHE_DIR=os.path.join(folder, "triton"),
        # Inductor keeps precompiled C++ headers in <tempdir>/torchinductor_<user> whatever
        # TORCHINDUCTOR_CACHE_DIR says: a temporary folder of the run's own keeps them cold too
        TMPDIR=os.path.join(folder, "tmp"),
    )
    os.makedirs(env["TMPDIR"], exist_ok=True)
    if mode == "first_result":
        env.pop("CHAINJIT_WAIT", None)
    else:
        env["CHAINJIT_WAIT"] = "1"
    return env


class ChildError(Exception):
    """A child that failed, timed out, or returned a loss other than the reference's."""


class Missing(ChildError):
    """The system's library is not installed."""


def run_child(name: str, workload: str, mode: str, activation: str, folder: str,
              ref_loss: float, limit_s: float = CHILD_LIMIT_S) -> dict:
    """One child process; its report with ``total_s`` and ``step_s`` added."""
    cmd = [sys.executable, str(CHILD), name, workload, mode, activation]
    with tempfile.TemporaryFile() as err:
        t0 = time.time()
        # a session of its own: a timeout kills the compile workers it started too
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_cache_env(folder, mode), stdout=subprocess.PIPE,
                                stderr=err, start_new_session=True)
        try:
            stdout, _ = proc.communicate(timeout=limit_s)
        except subprocess.TimeoutExpired:
            stdout = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its group: leftover workers of the child
            proc.wait()
        if stdout is None:
            raise ChildError(f"timed out after {limit_s:.0f} s (killed)")
        lines = [ln for ln in stdout.decode(errors="replace").splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            err.seek(0)
            last = (err.read().decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise ChildError(f"exit {proc.returncode}: " + one_line(last, 100))
    out = json.loads(lines[-1])
    if "error" in out:
        raise (Missing if out.get("missing") else ChildError)(out["error"])
    if not abs(out["loss"] - ref_loss) <= RTOL * abs(ref_loss) + 1e-6:
        raise ChildError(f"mismatch: first loss {out['loss']:.6g} != reference {ref_loss:.6g}")
    out["total_s"] = out["t_first"] - t0
    out["step_s"] = out["t_first"] - out["t_define"]
    if "t_compiled" in out:
        out["compiled_total_s"] = out["t_compiled"] - t0
        out["compiled_step_s"] = out["t_compiled"] - out["t_define"]
    return out


def _reference_losses(workloads: list[str]) -> dict:
    refs = {}
    for w in workloads:
        refs[w, "relu"] = reference_result(w)["loss"]
        if w in EDITABLE:
            refs[w, "tanh"] = reference_result(w, "tanh")["loss"]
    return refs


def _summary(runs: list[dict], keys: tuple[str, ...]) -> dict:
    """Medians of ``keys`` over the runs (with 2 runs: their mean), and the runs."""
    d = {"status": "ok", "reps": len(runs)}
    for k in keys:
        vals = [r[k] for r in runs if r.get(k) is not None]
        if vals:
            d[k] = float(np.median(vals))
    d["runs"] = [{k: r[k] for k in keys if k in r} for r in runs]
    return d


def _log(msg: str) -> None:
    print(f"  [compile_latency] {msg}", file=sys.stderr, flush=True)


def _cell(col: str, workload: str, refs: dict, runs: dict, status: dict) -> None:
    """One repetition of cold, warm and edit for one system and workload."""
    name = SYSTEMS[col]
    figures = [f for f in FIGURES if f != "edit" or workload in EDITABLE]
    with tempfile.TemporaryDirectory(prefix=f"bench-latency-{name}-") as folder:
        for fig in figures:
            if (workload, col, fig) in status or (workload, col, "cold") in status:
                continue  # failed before: not again
            activation = "tanh" if fig == "edit" else "relu"
            try:
                out = run_child(name, workload, "compiled", activation, folder,
                                refs[workload, activation])
            except Missing as e:
                status.update({(workload, col, f): str(e) for f in FIGURES})
                return
            except ChildError as e:
                status[workload, col, fig] = "error: " + one_line(str(e), 110)
                _log(f"{workload} {col} {fig}: {status[workload, col, fig]}")
                if fig == "cold":  # nothing to be warm from
                    for f in figures[1:]:
                        status.setdefault((workload, col, f), "not run: the cold run failed")
                continue
            runs.setdefault((workload, col, fig), []).append(out)
            _log(f"{workload} {col} {fig}: {out['total_s']:.2f} s ({out['step_s']:.2f} s step)")


def _first_result(workload: str, refs: dict, runs: list, status: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-latency-first-") as folder:
        try:
            out = run_child("chainjit", workload, "first_result", "relu", folder,
                            refs[workload, "relu"])
        except ChildError as e:
            status[workload] = ("" if isinstance(e, Missing) else "error: ") + one_line(str(e))
            _log(f"{workload} first_result: {status[workload]}")
            return
    if out.get("interpreter_step_s") and out.get("numpy_step_s"):
        out["interpreter_x_numpy"] = out["interpreter_step_s"] / out["numpy_step_s"]
    runs.append(out)
    _log(f"{workload} first_result: {out['total_s']:.2f} s ({out['step_s']:.2f} s step), "
         f"compiled after {out.get('compiled_step_s', float('nan')):.1f} s")


FIRST_KEYS = ("total_s", "step_s", "interpreter_calls", "interpreter_step_s", "numpy_step_s",
              "interpreter_x_numpy", "interpreter_alone_step_s", "compile_s", "compiled_total_s",
              "compiled_step_s")


def compile_latency(systems: list[str], quick: bool, reps: int | None = None) -> dict:
    """Every figure for every workload and system (see the module's doc); the JSON of the
    workload: {"workloads", "systems", "reps", "cells": {workload: {system: {figure: ...}}},
    "first_result": {workload: ...}}. ``reps`` (default ``REPS``, ``REPS_TORCH_COMPILE``):
    repetitions of every cell; first_result runs once."""
    cols = latency_systems(systems)
    workloads = WORKLOADS[quick]
    col_reps = {c: reps or (REPS_TORCH_COMPILE if c == "torch.compile" else REPS)[quick]
                for c in cols}
    reps = max(col_reps.values(), default=1)
    refs = _reference_losses(workloads)
    runs: dict = {}
    status: dict = {}
    first_runs: dict = {w: [] for w in workloads}
    first_status: dict = {}
    for rep in range(reps):
        for w in workloads:
            order = cols[rep % len(cols):] + cols[:rep % len(cols)] if cols else []
            for col in order:  # the first system rotates between repetitions
                if rep < col_reps[col]:
                    _cell(col, w, refs, runs, status)
            if "chainjit" in cols and has_first_result(w) and rep == 0:
                _first_result(w, refs, first_runs[w], first_status)
    cells = {w: {} for w in workloads}
    for w in workloads:
        for col in cols:
            cell = cells[w].setdefault(col, {})
            for fig in FIGURES:
                if fig == "edit" and w not in EDITABLE:
                    continue
                if (w, col, fig) in runs:
                    cell[fig] = _summary(runs[w, col, fig], ("total_s", "step_s"))
                    if (w, col, fig) in status:  # some repetitions failed
                        cell[fig]["failures"] = status[w, col, fig]
                else:
                    cell[fig] = {"status": status.get((w, col, fig), "not run")}
    first = {}
    for w in workloads:
        if first_runs[w]:
            first[w] = _summary(first_runs[w], FIRST_KEYS)
            first[w]["interpreter_times_s"] = first_runs[w][-1].get("interpreter_times_s", [])
        elif "chainjit" in cols and has_first_result(w):
            first[w] = {"status": first_status.get(w, "not run")}
    return {"workloads": workloads, "systems": cols, "reps": col_reps, "cells": cells,
            "first_result": first}


def has_first_result(workload: str) -> bool:
    """The workloads with a first_result row: the training steps (chain's value-and-grad is
    not a train_step)."""
    return workload != "chain"
