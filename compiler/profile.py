"""`Compiled.profile(*args)`: where a compiled step's time goes, kernel by kernel, against the
machine's roofline.

The step's driver is generated again with a clock read around every kernel call (every loop
nest, BLAS call and convolution: compiler/codegen/profile.py) and run, alternating with the
plain driver, until about `seconds` have passed (at least `repeat` runs of each). Each row is
one kernel call: the IR line of its node and the user's source line, its median time, its
share of the step, its mean time (where other processes' work lands: the means add up to the
driver's mean, the medians need not), its work (FLOPs of a matmul or convolution, else bytes
read + written), the rate achieved against this machine's peak (runtime/execution/machine.py: best
sgemm, best copy) and the roofline bound of that work. In each run the rows' times add up to
the driver's but for its glue (views, scalar arithmetic); the step is the plain driver's
median, as a call from Python takes it. The bound of the step is the sum of its kernels'
bounds: each kernel at the peak rate of the resource it needs most.

Donated arguments (a training step's parameters and optimiser state) are copied first: the
profile's runs do not update the caller's arrays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ir.graph import Graph, Node
from ir.ops import Op


@dataclass
class Row:
    """One kernel call of the step."""

    kernel: str  # the driver's name for the kernel (`kern_<hash>`)
    kind: str  # matmul, gemm, conv2d, loop, reduce, ...
    shape: str
    ir: str  # its node's IR line (the fused node's header)
    source: str  # the user's source line(s)
    seconds: float  # median time of one call
    flops: int  # multiply-adds x 2 of its products (0: a loop kernel)
    nbytes: int  # bytes read + written
    bound: float  # seconds at the machine's peak rate of what it needs most
    mean: float = 0.0  # mean time of one call (means add up to the driver's mean)

    def rate(self) -> tuple[float, str]:
        """(achieved rate, its unit): GFLOP/s for products, GB/s for the rest."""
        if self.seconds <= 0:
            return 0.0, "GFLOP/s" if self.flops else "GB/s"
        if self.flops:
            return self.flops / self.seconds / 1e9, "GFLOP/s"
        return self.nbytes / self.seconds / 1e9, "GB/s"


@dataclass
class Profile:
    name: str
    rows: list[Row]
    step: float  # median seconds of the plain driver's call
    driver: float  # median seconds inside the instrumented driver (kernels and glue)
    runs: int
    machine: object  # runtime.execution.machine.Machine
    samples: list[list[float]] = field(default_factory=list)  # per run: each row's seconds
    totals: list[float] = field(default_factory=list)  # per run: the whole driver's seconds

    @property
    def kernels(self) -> float:
        return sum(r.seconds for r in self.rows)

    @property
    def glue(self) -> float:
        """Median seconds of a run spent in the driver outside its kernels."""
        if not self.totals:
            return max(self.driver - self.kernels, 0.0)
        return float(np.median([t - sum(k) for k, t in zip(self.samples, self.totals)]))

    @property
    def bound(self) -> float:
        return sum(r.bound for r in self.rows)

    def by_kind(self) -> dict[str, float]:
        """Seconds per kind of kernel (matmul, gemm, loop, ...), largest first."""
        kinds: dict[str, float] = {}
        for row in self.rows:
            kinds[row.kind] = kinds.get(row.kind, 0.0) + row.seconds
        return dict(sorted(kinds.items(), key=lambda kv: -kv[1]))

    def __str__(self) -> str:
        return self.table()

    def table(self) -> str:
        m = self.machine
        head = (f"profile of {self.name}: {len(self.rows)} kernel calls; step "
                f"{_ms(self.step)} (median of {self.runs} runs), kernels {_ms(self.kernels)} "
                f"(the sum of their medians), driver glue {_ms(self.glue)}")
        spread = self.driver - self.kernels - self.glue
        if spread > 0.1 * self.driver:  # slow runs, each slowed in another kernel
            head += (f"; {_ms(spread)} more in the driver's median than in its kernels' "
                     "and glue's: time lost to other processes, in a different call each run")
        cells = [("#", "kernel", "kind", "shape", "time", "share", "mean", "work", "rate",
                  "of peak", "bound", "source", "IR")]
        for k, r in enumerate(self.rows):
            rate, unit = r.rate()
            peak = m.peak_gflops if r.flops else m.bandwidth_for(r.nbytes)
            work = f"{r.flops / 1e6:.1f} MFLOP" if r.flops else f"{r.nbytes / 1e6:.2f} MB"
            cells.append((str(k), r.kernel.removeprefix("kern_"), r.kind, r.shape,
                          _ms(r.seconds), f"{100 * r.seconds / max(self.step, 1e-12):.1f}%",
                          _ms(r.mean), work, f"{rate:.1f} {unit}", f"{100 * rate / peak:.0f}%",
                          _ms(r.bound), r.source, _short(r.ir)))
        widths = [max(len(row[c]) for row in cells) for c in range(len(cells[0]))]
        right = {0, 4, 5, 6, 7, 8, 9, 10}
        lines = [head, f"machine: {m.describe()}"]
        for row in cells:
            lines.append("  ".join(v.rjust(w) if c in right else v.ljust(w)
                                   for c, (v, w) in enumerate(zip(row, widths))).rstrip())
        kinds = ", ".join(f"{kind} {_ms(s)} ({100 * s / max(self.step, 1e-12):.0f}%)"
                          for kind, s in self.by_kind().items())
        lines.append(f"by kind: {kinds}")
        flops = sum(r.flops for r in self.rows)
        lines.append(f"total {_ms(self.step)} against a roofline bound of {_ms(self.bound)} "
                     f"({self.step / max(self.bound, 1e-12):.2f}x the bound; "
                     f"{flops / 1e6:.1f} MFLOP at {m.peak_gflops:.0f} GFLOP/s, the other "
                     f"kernels' bytes at {m.cache_gbs:.0f} GB/s in cache, "
                     f"{m.bandwidth_gbs:.0f} from memory)")
        return "\n".join(lines)

    def plot(self, path: str | None = None):
        """A bar chart of the rows' times beside their bounds (matplotlib, when installed);
        saved to `path` if given. Returns the figure."""
        try:
            import matplotlib.pyplot as plt
        except ImportError as error:
            raise ImportError("Profile.plot needs matplotlib (pip install matplotlib); "
                              "str(profile) is the same as a table") from error
        labels = [f"{k} {r.kind} {r.source}" for k, r in enumerate(self.rows)]
        y = np.arange(len(self.rows))
        fig, ax = plt.subplots(figsize=(9, 0.3 * len(self.rows) + 1.5))
        ax.barh(y, [1e3 * r.seconds for r in self.rows], label="measured")
        ax.barh(y, [1e3 * r.bound for r in self.rows], height=0.35, label="roofline bound")
        ax.set_yticks(y, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("ms per step")
        ax.set_title(f"{self.name}: {_ms(self.step)} per step, bound {_ms(self.bound)}")
        ax.legend()
        fig.tight_layout()
        if path is not None:
            fig.savefig(path)
        return fig


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 0.1 else f"{seconds:.3f} s"


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def node_work(node: Node) -> tuple[int, int]:
    """(FLOPs, bytes read + written) of one fused-graph node."""
    from compiler.codegen.summary import kernel_bytes

    nbytes = kernel_bytes(node)
    if node.op in (Op.MATMUL, Op.GEMM):
        return 2 * int(np.prod(node.out.shape)) * node.inputs[0].shape[-1], nbytes
    if node.op == Op.CONV2D:
        w = node.inputs[1].shape  # (O, C, kh, kw)
        return 2 * int(np.prod(node.out.shape)) * int(np.prod(w[1:])), nbytes
    return 0, nbytes


def _describe(node: Node | None) -> tuple[str, str, str]:
    """(kind, shape, source lines) of a node."""
    if node is None:
        return "glue", "", ""
    from compiler.codegen.summary import _describe as describe

    kind, shape = describe(node)
    sources = [str(node.source)] if node.source else []
    if node.op == Op.FUSED:
        for inner in node.params["body"].nodes:
            text = str(inner.source) if inner.source else ""
            if text and text not in sources:
                sources.append(text)
    return kind, shape.replace(" ", ""), ",".join(_compact(sources))


def _compact(sources: list[str]) -> list[str]:
    """`model.py:5, model.py:6` -> `model.py:5,6`."""
    out, last = [], None
    for s in sources:
        file, _, line = s.rpartition(":")
        out.append(line if file and file == last else s)
        last = file or last
    return out


def profile_graph(name: str, graph: Graph, donate: dict[int, int], guard: int | None,
                  leaves: list, seconds: float = 0.5, repeat: int = 5) -> Profile:
    """Profile the compiled code of a fused `graph` on argument `leaves` (see module doc)."""
    from compiler.codegen import generate
    from compiler.codegen.profile import instrument
    from compiler.kernels.clock import ticks_per_second
    from runtime.execution.blas import with_one_blas_thread
    from runtime.execution.cache import KERNEL_PREFIX, load_module
    from runtime.execution.executable import Executable, _extra_arg
    from runtime.execution.linking import ensure_compiled
    from runtime.execution.machine import machine

    generated = generate(graph, donate, guard)
    for text in generated.kernels.values():
        load_module(text, KERNEL_PREFIX)
    plain = Executable(graph, generated, load_module(generated.source).driver)
    source, calls, commented = instrument(generated.source)
    timed = load_module(source).driver
    donated = {i for i, _ in generated.donation.values()}
    leaves = [np.array(x, copy=True) if i in donated and isinstance(x, np.ndarray) else x
              for i, x in enumerate(leaves)]
    args = [*plain.check(leaves), *(_extra_arg(s) for s in generated.extra_args)]
    slots = np.zeros(len(calls) + 1, np.int64)
    ensure_compiled(plain.driver, args)
    ensure_compiled(timed, (*args, slots))
    run_plain = with_one_blas_thread(plain.driver) if generated.threads else plain.driver
    run_timed = with_one_blas_thread(timed) if generated.threads else timed
    rate = ticks_per_second()
    if rate is None:
        raise RuntimeError("chainjit: this CPU's cycle counter does not run; no profile")
    for _ in range(2):  # warm: buffers touched, BLAS threads started
        run_plain(*args)
        run_timed(*args, slots)
    samples, steps = [], []
    stop = time.perf_counter() + seconds
    while len(steps) < repeat or (time.perf_counter() < stop and len(steps) < 10000):
        slots[:] = 0
        run_timed(*args, slots)
        samples.append(slots / rate)
        start = time.perf_counter()
        run_plain(*args)
        steps.append(time.perf_counter() - start)
    medians = np.median(np.array(samples), axis=0)
    means = np.mean(np.array(samples), axis=0)
    nodes = graph.nodes
    peak = machine()
    rows = []
    for call, t, mean in zip(calls, medians[:-1], means[:-1]):
        node = nodes[call.node] if commented == len(nodes) and call.node is not None else None
        kind, shape, where = _describe(node)
        flops, nbytes = node_work(node) if node is not None else (0, 0)
        rows.append(Row(call.caller, kind, shape, call.comments[0].split("    # ")[0], where,
                        float(t), flops, nbytes, peak.seconds(flops, nbytes), float(mean)))
    return Profile(name, rows, float(np.median(steps)), float(medians[-1]), len(steps), peak,
                   [list(s[:-1]) for s in samples], [float(s[-1]) for s in samples])
