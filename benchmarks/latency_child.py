"""Child process: one step of a workload in a fresh process, then exit.

``python benchmarks/latency_child.py SYSTEM`` (the ``compile_latency`` workload): one mlp_large
step; prints one JSON line with ``t_first``, the wall-clock time (``time.time()``) at which the
first step's result was available; the parent subtracts the time at which it started the process,
so imports and compilation are included. The cache directory comes from ``CHAINJIT_CACHE_DIR``
(chainjit) / ``BENCH_CACHE_DIR`` (JAX's persistent compilation cache).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(name: str) -> None:
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
        data, params = WORKLOADS["mlp_large"].make()
        step = mod.make_step("mlp_large", data, params)
        loss = step.run()
    except Exception as e:  # noqa: BLE001
        missing = isinstance(e, ModuleNotFoundError) and e.name and "." not in e.name
        msg = f"missing ({e.name})" if missing else f"{type(e).__name__}: {e}"[:120]
        print(json.dumps({"error": msg, "missing": bool(missing)}), flush=True)
        return
    t = time.time()
    print(json.dumps({"t_first": t, "loss": loss}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
