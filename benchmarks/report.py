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
    try:
        import llvmlite.binding as llvm

        from runtime.execution.machine import vector_bits

        llvm_cpu, bits = llvm.get_host_cpu_name(), vector_bits()
    except Exception:  # noqa: BLE001 - reported as unknown
        llvm_cpu, bits = "unknown", None
    return {
        "cpu": cpu,
        "llvm_cpu": llvm_cpu,
        "vector_bits": bits,
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


FIGURE_TITLES = {
    "cold": "cold: a new process, empty caches (chainjit: wait=True, the first compiled result)",
    "warm": "warm: a new process with the caches the cold run left",
    "edit": "edit: relu -> tanh, in the caches the relu runs left (only what changed compiles)",
}
SPAN_TITLES = {
    "step_s": "define the step + first call (imports and data excluded)",
    "total_s": "process start to the first result (imports included)",
}


def _s(d: dict, key: str) -> str:
    if d.get("status") != "ok":
        return one_line(d.get("status", "not run"), 60)
    return "-" if d.get(key) is None else f"{d[key]:.2f}"


def latency_figure_table(res: dict, fig: str, key: str) -> str:
    cols = res["systems"]
    head = ["workload", *cols] + (["chainjit / JAX"] if {"chainjit", "jax"} <= set(cols) else [])
    lines = [f"#### {FIGURE_TITLES[fig]}; {SPAN_TITLES[key]}, s", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for w in res["workloads"]:
        cell = res["cells"].get(w, {})
        if not any(fig in cell.get(c, {}) for c in cols):
            continue  # no such figure for this workload (no edit of the transformer or chain)
        row = [w] + [_s(cell.get(c, {}).get(fig, {}), key) for c in cols]
        if len(head) > len(cols) + 1:
            a, b = cell.get("chainjit", {}).get(fig, {}), cell.get("jax", {}).get(fig, {})
            ok = a.get(key) and b.get(key) and a["status"] == b["status"] == "ok"
            row.append(f"{a[key] / b[key]:.2f}x" if ok else "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def first_result_table(res: dict) -> str:
    head = ["workload", "first result s (step)", "(total)", "interpreter calls",
            "interpreter step ms", "NumPy step ms", "interpreter / NumPy",
            "interpreter alone ms",
            "compiled after s (step)", "cold wait=True s (step)"]
    lines = ["#### first_result: chainjit's default path (wait=False), empty caches: the first "
             "loss comes from the reference interpreter while the step compiles on a thread", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for w, d in res.get("first_result", {}).items():
        if d.get("status") != "ok":
            lines.append(f"| {w} | {one_line(d.get('status'), None)} |" + " |" * (len(head) - 2))
            continue

        def ms(key, d=d):
            return "-" if d.get(key) is None else _ms(d[key])

        def sec(key, d=d):
            return "-" if d.get(key) is None else f"{d[key]:.2f}"

        ratio = d.get("interpreter_x_numpy")
        cold = res["cells"].get(w, {}).get("chainjit", {}).get("cold", {})
        lines.append("| " + " | ".join([
            w, sec("step_s"), sec("total_s"), f"{d.get('interpreter_calls', 0):.0f}",
            ms("interpreter_step_s"), ms("numpy_step_s"), _ratio(ratio),
            ms("interpreter_alone_step_s"),
            sec("compiled_step_s"), _s(cold, "step_s")]) + " |")
    return "\n".join(lines)


def latency_table(res: dict) -> str:
    reps = ", ".join(f"{c} {n}" for c, n in res["reps"].items())
    out = [
        "### compile_latency: the first step result in fresh processes (seconds; median of the "
        f"runs per cell: {reps}; first_result: 1; torch.compile: Inductor)",
        "",
        "chainjit / JAX: chainjit's time over JAX's (above 1: chainjit takes longer).",
    ]
    for fig in ("cold", "warm", "edit"):
        for key in ("step_s", "total_s"):
            out += ["", latency_figure_table(res, fig, key)]
    if res.get("first_result"):
        out += ["", first_result_table(res)]
    return "\n".join(out)


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
            f"- Machine: {m['cpu']}, {m['cores']} cores, LLVM host {m.get('llvm_cpu', '?')}, "
            f"{m.get('vector_bits', '?')}-bit vectors; Python {m['python']}, numpy {m['numpy']}, "
            f"numba {m['numba']}, jax {m['jax']}, torch {m['torch']}; {m['date']}."
        ),
        (
            f"- Measured in the same run (best of the measurements between workloads): "
            f"peak float32 "
            f"matmul {mach['peak_flops'] / 1e9:.1f} GFLOP/s (the best sgemm: "
            f"{mach.get('peak_source', 'np.dot 1024x1024')}), copy bandwidth "
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
