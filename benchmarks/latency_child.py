"""Child process of the compile_latency workload: one system's first step in a fresh process.

``python benchmarks/latency_child.py SYSTEM WORKLOAD MODE [ACTIVATION]``, started by
``latency.py`` with the caches in the environment (``CHAINJIT_CACHE_DIR`` and
``NUMBA_CACHE_DIR`` for chainjit, ``BENCH_CACHE_DIR`` for JAX's persistent compilation cache,
``TORCHINDUCTOR_CACHE_DIR`` / ``TRITON_CACHE_DIR`` for torch.compile). It imports the system and
makes the workload's data, then notes ``t_define`` (``time.time()``), defines the step
(``make_step``) and calls it once; ``t_first`` is the time at which that call returned its loss.
The parent subtracts the time at which it started the process (total: imports included) and
``t_define`` (step: defining the step + its first call, imports and data excluded).

MODE ``compiled``: the first COMPILED result (chainjit's step built with ``wait=True``).
MODE ``first_result`` (chainjit only): chainjit's default path, ``wait=False``: the first call
is answered by the reference interpreter while the step compiles on a thread; the child keeps
calling the step until the compiled code takes over and reports the times of the calls the
interpreter served, the time of the first compiled result, and the median step of the
hand-written NumPy baseline (``numpy_sys``) and of chainjit's interpreter on its own
(``backend="interpreter"``, no compile running), both timed in this process afterwards, their
steps alternated.

Prints one JSON line (on the original stdout; anything libraries print goes to stderr).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

INTERPRETER_LIMIT_S = 90.0  # first_result: interpreter calls for at most this long, then wait
BASELINE_STEPS, BASELINE_BUDGET_S = 20, 3.0  # first_result: the baselines' steps (at most)


def _jax_cache() -> None:
    import jax

    cache = os.environ.get("BENCH_CACHE_DIR")
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return None if n == 0 else (xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2]))


def _baselines(workload: str) -> dict:
    """Median steps of the hand-written NumPy baseline and of chainjit's interpreter on its own
    (``backend="interpreter"``, no compile beside it), in this process, their steps alternated
    so that load that comes and goes slows both alike (each after one untimed step)."""
    from benchmarks import systems
    from benchmarks.workloads import WORKLOADS

    steps = {}
    for key, name, options in (("numpy_step_s", "numpy", {}),
                               ("interpreter_alone_step_s", "chainjit",
                                {"backend": "interpreter"})):
        data, params = WORKLOADS[workload].make()
        steps[key] = systems.load(name).make_step(workload, data, params, **options)
        steps[key].run()
    times = {key: [] for key in steps}
    t_end = time.perf_counter() + BASELINE_BUDGET_S
    while len(times["numpy_step_s"]) < BASELINE_STEPS and (
            len(times["numpy_step_s"]) < 3 or time.perf_counter() < t_end):
        for key, step in steps.items():
            t0 = time.perf_counter()
            step.run()
            times[key].append(time.perf_counter() - t0)
    return {key: _median(ts) for key, ts in times.items()}


def _until_compiled(step, out: dict) -> None:
    """first_result: call the step until the background build is done; note which calls the
    interpreter served (runtime.execution.background.BackgroundBuild counts them) and their
    times."""
    from runtime.execution import background

    builds = list(background._RUNNING)
    out["interpreter_calls"] = 1 if builds else 0  # the first call, when a build was started
    if not builds:  # the first call ran compiled code (found in the cache)
        return
    build = builds[0]
    times, t_end = [], time.perf_counter() + INTERPRETER_LIMIT_S
    while not build.ready and time.perf_counter() < t_end:
        served = build.served
        t0 = time.perf_counter()
        step.run()
        dt = time.perf_counter() - t0
        if build.served > served:
            times.append(dt)
    build.wait()
    out["compile_s"] = build.seconds  # the background build, from its start
    step.run()  # the first call on the compiled code
    out["t_compiled"] = time.time()
    out["interpreter_calls"] += len(times)
    out["interpreter_step_s"] = _median(times)  # the calls after the first
    out["interpreter_times_s"] = [round(t, 6) for t in times]


def run(name: str, workload: str, mode: str, activation: str) -> dict:
    if name == "jax":
        _jax_cache()
    from benchmarks import systems
    from benchmarks.workloads import WORKLOADS

    mod = systems.load(name)
    data, params = WORKLOADS[workload].make()
    options = {"activation": activation}
    if name == "chainjit":
        options["wait"] = mode != "first_result"
    t_define = time.time()
    step = mod.make_step(workload, data, params, **options)
    loss = step.run()
    out = {"t_define": t_define, "t_first": time.time(), "loss": loss}
    if mode == "first_result":
        _until_compiled(step, out)
        out.update(_baselines(workload))
    return out


def main(argv: list[str]) -> int:
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever libraries print goes to stderr
    name, workload, mode = argv[:3]
    activation = argv[3] if len(argv) > 3 else "relu"
    try:
        out = run(name, workload, mode, activation)
    except Exception as e:  # noqa: BLE001
        missing = isinstance(e, ModuleNotFoundError) and e.name and "." not in e.name
        msg = f"missing ({e.name})" if missing else f"{type(e).__name__}: {e}"
        out = {"error": " ".join(msg.split())[:160], "missing": bool(missing)}
        if os.environ.get("BENCH_TRACEBACK"):
            import traceback

            traceback.print_exc()
    channel.write(json.dumps(out) + "\n")
    channel.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
