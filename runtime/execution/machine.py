"""This machine's roofline: its CPU, vector width, best matrix-product rate and memory copy rate.

`machine()` gives a `Machine`: the CPU model (from /proc/cpuinfo where there is one), LLVM's
host CPU name, the widest vector registers its features allow (512 bits with AVX-512F, 256
with AVX/AVX2, else 128), the peak float32 rate (`peak_gflops`: the best sgemm of the BLAS
chainjit calls, SciPy's, at n = 1024 and 2048 with its default threads; NumPy's own BLAS if
it does better) and the memory bandwidth (`bandwidth_gbs`: the best copy of a 64 MiB array,
bytes read plus bytes written; `cache_gbs` the same of a 512 KiB one, for kernels whose
arrays stay in cache). Measuring takes about a second; the result is cached on disk
beside the compiled code (`CHAINJIT_CACHE_DIR`), keyed by the environment stamp (versions and
CPU), so it is measured once per machine. `CHAINJIT_PEAK="gflops,gbs[,cache gbs]"` sets them
instead (for tests, or a machine whose quiet rate is known). Best-of rates: a shared machine
runs slower than this most of the time, so a kernel's share of peak understates it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, fields

from runtime.execution.cache import cache_dir, environment_stamp, write_atomic


@dataclass(frozen=True)
class Machine:
    cpu: str  # the CPU model
    llvm_cpu: str  # LLVM's host CPU name (the target generated code is compiled for)
    vector_bits: int
    cores: int
    peak_gflops: float  # float32 multiply-adds x 2 per second, x 1e-9
    bandwidth_gbs: float  # bytes read + written per second, x 1e-9, from memory
    cache_gbs: float = 0.0  # the same for arrays that fit in the L2 cache (512 KiB)

    def bandwidth_for(self, nbytes: int) -> float:
        """The copy rate of a kernel moving `nbytes`: the cache's up to CACHE_BYTES."""
        return self.cache_gbs if 0 < nbytes <= CACHE_BYTES and self.cache_gbs else \
            self.bandwidth_gbs

    def seconds(self, flops: int, nbytes: int) -> float:
        """The roofline bound of a kernel: its FLOPs at peak or its bytes at the copy rate
        for their size, whichever takes longer."""
        return max(flops / (self.peak_gflops * 1e9), nbytes / (self.bandwidth_for(nbytes) * 1e9))

    def describe(self) -> str:
        return (f"{self.cpu} ({self.cores} cores, LLVM host {self.llvm_cpu}, "
                f"{self.vector_bits}-bit vectors); peak {self.peak_gflops:.0f} GFLOP/s "
                f"(best sgemm), copy {self.bandwidth_gbs:.1f} GB/s ({self.cache_gbs:.0f} "
                "in cache)")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vector_bits() -> int:
    """The widest vectors LLVM may use on this CPU: 512 (AVX-512F), 256 (AVX), else 128."""
    import llvmlite.binding as llvm

    try:
        features = set(llvm.get_host_cpu_features().flatten().split(","))
    except RuntimeError:
        return 128
    if "+avx512f" in features:
        return 512
    return 256 if "+avx" in features else 128


def sgemm_gflops(n: int, repeat: int = 5, seconds: float = 0.3) -> float:
    """The best float32 rate of SciPy's sgemm (the BLAS compiled code calls) on n x n."""
    import numpy as np
    from scipy.linalg.blas import sgemm

    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32))
    b = np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32))
    c = np.zeros((n, n), np.float32, order="F")
    sgemm(1.0, a, b, 0.0, c, overwrite_c=True)
    best, stop = float("inf"), time.perf_counter() + seconds
    for k in range(repeat * 20):
        start = time.perf_counter()
        sgemm(1.0, a, b, 0.0, c, overwrite_c=True)
        best = min(best, time.perf_counter() - start)
        if k >= repeat and time.perf_counter() > stop:
            break
    return 2.0 * n**3 / best / 1e9


CACHE_BYTES = 2**21  # kernels moving up to this many bytes are timed against `cache_gbs`


def copy_gbs(nbytes: int = 2**26, repeat: int = 7) -> float:
    """The best rate of one array copy of `nbytes` (bytes read + bytes written)."""
    import numpy as np

    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float("inf")
    inner = max(1, 2**24 // nbytes)  # small copies timed in runs of several
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            np.copyto(dst, src)
        best = min(best, (time.perf_counter() - start) / inner)
    return 2 * src.nbytes / best / 1e9


def measure() -> Machine:
    import llvmlite.binding as llvm

    peak = max(sgemm_gflops(1024), sgemm_gflops(2048, repeat=3))
    return Machine(cpu_model(), llvm.get_host_cpu_name(), vector_bits(), os.cpu_count() or 1,
                   round(peak, 1), round(copy_gbs(), 1), round(copy_gbs(2**19, 21), 1))


@functools.lru_cache(maxsize=1)
def machine() -> Machine:
    """This machine's `Machine`, measured once and cached on disk (see the module doc)."""
    import llvmlite.binding as llvm

    given = os.environ.get("CHAINJIT_PEAK")
    if given:
        gflops, gbs, *cache = (float(v) for v in given.split(","))
        return Machine(cpu_model(), llvm.get_host_cpu_name(), vector_bits(),
                       os.cpu_count() or 1, gflops, gbs, cache[0] if cache else gbs)
    stamp = environment_stamp()
    path = cache_dir() / f"machine_{hashlib.sha256(stamp.encode()).hexdigest()[:16]}.json"
    try:
        saved = json.loads(path.read_text())
        if set(saved) == {f.name for f in fields(Machine)}:  # else an older file: measure
            return Machine(**saved)
    except (OSError, ValueError, TypeError):
        pass
    found = measure()
    try:
        write_atomic(path, json.dumps(asdict(found)).encode())
    except OSError:
        pass  # measured again by the next process
    return found
