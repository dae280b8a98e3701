"""Child process: one step of a workload in a fresh process, then exit.

``python benchmarks/latency_child.py SYSTEM`` (the ``compile_latency`` workload): one mlp_large
step; prints one JSON line with ``t_first``, the wall-clock time (``time.time()``) at which the
first step's result was available; the parent subtracts the time at which it started the process,
so imports and compilation are included. The cache directory comes from ``CHAINJIT_CACHE_DIR``
(chainjit) / ``BENCH_CACHE_DIR`` (JAX's persistent compilation cache).

``python benchmarks/latency_child.py SYSTEM WORKLOAD --probe``: the compile probe the harness runs
(with a time limit) before setting up a compiling system in-process, so that a compile that hangs
in native code cannot stall the whole run; it also fills the system's on-disk cache.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(name: str, workload: str = "mlp_large", probe: bool = False) -> None:
    if name == "jax":
        import jax

        cache = os.environ.get("BENCH_CACHE_DIR")
        if cache:
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    from benchmarks import systems
    from benchmarks.workloads import WORKLOADS

    try:
        mod = systems.load(name)
        data, params = WORKLOADS[workload].make()
        step = mod.make_step(workload, data, params)
        if probe:
            step.value_and_grad()
        loss = step.run()
    except Exception as e:  # noqa: BLE001
        missing = isinstance(e, ModuleNotFoundError) and e.name and "." not in e.name
        msg = f"missing ({e.name})" if missing else f"{type(e).__name__}: {e}"[:120]
        print(json.dumps({"error": msg, "missing": bool(missing)}), flush=True)
        return
    t = time.time()
    print(json.dumps({"t_first": t, "loss": loss}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3], probe="--probe" in sys.argv)
