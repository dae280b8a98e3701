"""Benchmark CLI: ``python benchmarks/run.py [--quick] [--only chain,mlp_small] [--systems ...]``.

Prints a markdown table per workload, writes ``benchmarks/results/latest.json`` and
``benchmarks/results/latest.md``; a full run (all workloads, all systems, not ``--quick``) also
rewrites ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import harness, latency, report
from benchmarks.systems import EXTRA, ORDER
from benchmarks.workloads import ALL

RESULTS_DIR = ROOT / "benchmarks" / "results"


def _csv(value: str, allowed: list[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return [v for v in allowed if v in items]  # canonical order


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: few repetitions")
    ap.add_argument(
        "--only",
        default=None,
        help=f"comma-separated workloads (default: all; --quick skips compile_latency): {ALL}",
    )
    ap.add_argument(
        "--systems",
        default=",".join(ORDER),
        help=f"comma-separated systems (default: {','.join(ORDER)}; also {','.join(EXTRA)}; "
        "compile_latency times chainjit, jax and, for torch, torch.compile)",
    )
    ap.add_argument(
        "--latency-reps",
        type=int,
        default=None,
        help=f"compile_latency repetitions per cell (default {latency.REPS[False]}, "
        f"{latency.REPS[True]} with --quick)",
    )
    ap.add_argument("--out", default=str(RESULTS_DIR / "latest.json"), help="JSON output path")
    args = ap.parse_args(argv)
    if args.only is None:
        args.only = ",".join(w for w in ALL if not (args.quick and w == "compile_latency"))
    workloads = _csv(args.only, ALL, "workload")
    systems = _csv(args.systems, ORDER + EXTRA, "system")

    t_start = time.perf_counter()
    print("measuring machine bound ...", file=sys.stderr, flush=True)
    best = harness.measure_machine(args.quick)
    info = report.machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores, LLVM host {info['llvm_cpu']}, "
          f"{info['vector_bits']}-bit vectors; peak {best['peak_flops'] / 1e9:.0f} GFLOP/s "
          f"({best['peak_source']}), copy {best['copy_bandwidth'] / 1e9:.1f} GB/s",
          file=sys.stderr, flush=True)
    results = {
        "machine": info,
        "quick": args.quick,
        "systems": systems,
        "workloads": {},
    }
    for i, w in enumerate(workloads):
        print(f"workload {w}", file=sys.stderr, flush=True)
        if w == "compile_latency":
            results["workloads"][w] = latency.compile_latency(systems, args.quick,
                                                              args.latency_reps)
        else:
            results["workloads"][w] = harness.run_workload(w, systems, args.quick)
        # re-measured after every workload (in full after the last), best kept: a noisy machine
        # only ever looks slower
        m = harness.measure_machine(quick=args.quick or i < len(workloads) - 1)
        if m["peak_flops"] > best["peak_flops"]:
            best["peak_flops"], best["peak_source"] = m["peak_flops"], m["peak_source"]
        best["copy_bandwidth"] = max(best["copy_bandwidth"], m["copy_bandwidth"])
    results["bound"] = best
    for w, res in results["workloads"].items():
        if w == "compile_latency":
            continue
        # burst: the best rates of the run; alongside: the peak's median in the same rounds
        res["bound_s"] = harness.bound_seconds(w, best)
        res["bound_alongside_s"] = harness.bound_alongside(w, res.get("peak", {}), best)
        typical = res["bound_alongside_s"] or res["bound_s"]
        for d in res["systems"].values():
            if "median_s" in d:
                d["x_bound"] = d["median_s"] / typical  # median against median
                d["min_x_burst"] = d["min_s"] / res["bound_s"]  # best against best
    results["elapsed_s"] = time.perf_counter() - t_start
    results["machine"]["load_avg_1m_end"] = report._load()

    md = report.markdown(results)
    print(md)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    report.write_json(results, args.out)
    (RESULTS_DIR / "latest.md").write_text(md)
    if not args.quick and workloads == ALL and systems == ORDER:
        header = "# Benchmark results\n\nLatest full run of `make bench` (see README.md).\n\n"
        (ROOT / "benchmarks" / "RESULTS.md").write_text(header + md)
    print(f"wrote {os.path.relpath(args.out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
