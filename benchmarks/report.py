"""Reporting: machine description, markdown tables, JSON output."""

from __future__ import annotations

import datetime
import json
import os
import platform
from importlib import metadata


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "numba": _version("numba"),
        "jax": _version("jax"),
        "jaxlib": _version("jaxlib"),
        "torch": _version("torch"),
        "load_avg_1m_start": _load(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def one_line(msg, limit: int | None = 110) -> str:
    """A message fit for a table cell: one line, no pipes, at most ``limit`` characters."""
    msg = " ".join(str(msg).replace("|", "/").split())
    return msg if limit is None or len(msg) <= limit else msg[: limit - 3] + "..."


def _ms(s: float) -> str:
    ms = s * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def workload_table(name: str, res: dict, systems: list[str]) -> str:
    others = systems
    head = ["system", "median ms", "min ms", "steps/s"]
    head += [f"vs {o}" for o in others] + ["x bound", "min x burst", "1st call s"]
    alongside = res.get("bound_alongside_s")
    bound = f"bound {_ms(res['bound_s'])} ms at the burst peak"
    if alongside:
        bound += (f", {_ms(alongside)} ms at the peak's median rate in these rounds (x bound: "
                  f"median / this; min x burst: min / the burst bound)")
    else:
        bound += " (no peak timed alongside: x bound is median / this)"
    lines = [
        f"### {name}: {res['description']}",
        "",
        bound,
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for s in systems:
        d = res["systems"].get(s, {"status": "not run"})
        if "median_s" not in d:
            row = [s, one_line(d["status"], None)] + [""] * (len(head) - 2)
        else:
            sv = d.get("speedup_vs", {})
            row = [s, _ms(d["median_s"]), _ms(d["min_s"]), f"{d['steps_per_s']:.3g}"]
            row += ["" if o == s else _ratio(sv.get(o)) for o in others]
            row += [f"{d['x_bound']:.2f}", f"{d.get('min_x_burst', float('nan')):.2f}",
                    f"{d.get('first_call_s', float('nan')):.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def latency_table(res: dict) -> str:
    lines = [
        "### compile_latency: process start -> first mlp_large step result (imports included)",
        "",
        "| system | cold cache s | warm cache s |",
        "|---|---|---|",
    ]
    for s, d in res.items():
        if d["status"] == "ok":
            lines.append(f"| {s} | {d['cold_s']:.2f} | {d['warm_s']:.2f} |")
        else:
            lines.append(f"| {s} | {one_line(d['status'], None)} | |")
    return "\n".join(lines)


def load_sentence(m: dict) -> str:
    """What the load average says about the run (the benchmark's own threads count too)."""
    start, end = m["load_avg_1m_start"], m.get("load_avg_1m_end")
    text = f"- Load average (1 min) at start {start}, at end {end}, on {m['cores']} cores"
    if max(start, end or 0) > m["cores"]:
        return text + (": above the core count, other processes shared the CPU and the "
                       "absolute times are inflated (the paired ratios less so).")
    # the load average cannot tell the benchmark's own threads from other work: say only that
    return text + (": within the core count (the benchmark's own threads count too; it "
                   "cannot rule out other work).")


def markdown(results: dict) -> str:
    m, mach = results["machine"], results["bound"]
    out = [
        (
            f"- Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, numpy {m['numpy']}, "
            f"numba {m['numba']}, jax {m['jax']}, torch {m['torch']}; {m['date']}."
        ),
        (
            f"- Measured in the same run (best of the measurements between workloads): "
            f"peak float32 "
            f"matmul {mach['peak_flops'] / 1e9:.1f} GFLOP/s (np.dot 1024x1024), copy bandwidth "
            f"{mach['copy_bandwidth'] / 1e9:.1f} GB/s (np.copyto, read+write)."
        ),
        load_sentence(m),
        "",
    ]
    systems = results["systems"]
    for name, res in results["workloads"].items():
        if name == "compile_latency":
            out.append(latency_table(res))
        else:
            out.append(workload_table(name, res, systems))
        out.append("")
    out.append(f"Total run time {results['elapsed_s']:.0f} s.")
    return "\n".join(out) + "\n"


def write_json(results: dict, path) -> None:
    def conv(o):
        if hasattr(o, "item"):
            return o.item()
        raise TypeError(type(o))

    with open(path, "w") as f:
        json.dump(results, f, indent=2, default=conv)
