"""Loop nests of compiler/codegen/loops.py: flattened loops, no size-1 loops, prange, float32.

Each test compiles one small function with the Numba backend, compares it with the reference
interpreter and checks the shape of the generated loops in `.source()`. Few compiles: every
test packs several kernels into one function.
"""

import re

import numba
import numpy as np
import pytest

import compiler.codegen.loops as kernels
from compiler import compile

RNG = np.random.default_rng(0)


def f32(*shape):
    return RNG.uniform(-2.0, 2.0, shape).astype(np.float32)


def run_both(fn, *args):
    """(numba outputs, interpreter outputs, generated source, compiled function)."""
    fast, slow = compile(fn), compile(fn, backend="interpreter")
    got, want = fast(*args), slow(*args)
    for g, w in zip(got, want, strict=True):
        assert np.asarray(g).dtype == np.asarray(w).dtype
        np.testing.assert_allclose(g, w, rtol=2e-6, atol=1e-6)
    return got, want, fast.source(*args), fast


def loops(source: str) -> list[str]:
    return re.findall(r"for (i\d+) in (range|numba\.prange)\((.*)\):", source)


def kernel_block(source: str, marker: str) -> str:
    """The kernel module the driver calls for the node whose comment in the driver's body
    names `marker` (its lines from that comment to the next blank line call `kern_<hash>`)."""
    lines = source.split("\n")
    body = next(k for k, line in enumerate(lines) if line.startswith("def driver("))
    start = next(k for k in range(body, len(lines)) if marker in lines[k] and "#" in lines[k])
    end = next(k for k in range(start, len(lines)) if not lines[k].strip())
    caller = re.search(r"\b(kern_\w+)\(", "\n".join(lines[start:end])).group(1)
    section = source.split(f"the driver's {caller} ----\n", 1)[1]
    return section.split("\n# ---- kernel module ", 1)[0]


# A loop size in a kernel: a shape read, or an integer argument (a driver argument's size).
SIZE = r"(?:\w+\.shape\[\d\]|a\d+)"


def test_kernel_flattens_contiguous_arrays_to_one_loop():
    def fn(x, y, p, m, b):
        full = np.exp(x) * y + 1.0  # (3, 4, 5), every array C at full shape: one loop
        rows = np.sum(p * p, axis=(1, 2))  # kept axis 0, reduced (1, 2) merged
        cols = np.sum(m * m, axis=0)  # reduced leading axis: accumulator array
        bias = np.maximum(m + b, 0.0)  # b broadcast on axis 0 only: two loops
        return full, rows, cols, bias

    x, y, p, m, b = f32(3, 4, 5), f32(3, 4, 5), f32(2, 3, 4), f32(6, 8), f32(8)
    *_, source, _ = run_both(fn, x, y, p, m, b)
    assert re.search(rf"for i1 in range\({SIZE} \* {SIZE}\)", source)
    assert "c_view(" in source  # flat views of the C arrays (compiler/kernels/views.py)
    assert not any(int(name[1:]) >= 2 for name, _, _ in loops(source))  # no 3-deep nest
    assert "range(1)" not in source
    # the 3-D elementwise chain runs as one flat loop over all 60 elements
    assert any(re.fullmatch(rf"{SIZE} \* {SIZE} \* {SIZE}", size) for _, _, size in loops(source))


def test_kernel_skips_size_one_axes():
    def fn(x, b, z):
        y = np.tanh(x + b)  # x (5, 1, 8), b (8,): loops over 5 and 8 only
        s = np.sum(z, axis=1)  # z (4, 1): no loop for the size-1 reduced axis
        return y * 2.0, s

    x, b, z = f32(5, 1, 8), f32(8), f32(4, 1)
    *_, source, _ = run_both(fn, x, b, z)
    assert "range(1)" not in source
    assert len(loops(source)) <= 3  # (5, 8) nest and the (4,) loop


def test_kernel_max_min_keep_nan_in_select_form():
    def fn(a, c):
        return np.maximum(a, c), np.minimum(a, c), np.max(a, axis=1)

    a, c = f32(4, 6), f32(4, 6)
    a[0, 1] = c[1, 2] = a[2, 0] = np.nan
    got, want, source, _ = run_both(fn, a, c)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
    assert " or " not in source  # no short-circuit: a branch-free select


def test_kernel_prange_above_threshold(monkeypatch):
    monkeypatch.setattr(kernels, "PARALLEL_MIN_SIZE", 16)

    def fn(x, m):
        return np.sum(np.tanh(x) * x), np.sum(m * m, axis=1), np.exp(m) + m

    x, m = f32(256), f32(16, 32)
    *_, source, _ = run_both(fn, x, m)
    assert "numba.prange(" in source
    assert "parallel={'prange': True" in source
    assert re.search(r"\w+ \+= ", source)  # the scalar sum is a prange reduction


def test_kernel_no_prange_below_threshold_or_for_scalar_max(monkeypatch):
    def fn(x):
        return np.max(x), np.exp(x)

    x = f32(64)
    *_, source, _ = run_both(fn, x)
    assert "prange" not in source and "parallel" not in source  # small: serial
    monkeypatch.setattr(kernels, "PARALLEL_MIN_SIZE", 16)
    source = compile(fn).source(x)
    block = kernel_block(source, "reduce_max")
    assert "prange" not in block  # a max over the parallel loop cannot be split per thread


def test_kernel_float32_stays_float32():
    def fn(x, y):
        return np.sum(np.tanh(0.7 * x + 0.1) * y - 0.5 * np.exp(-x * x)), np.maximum(x, 0.0) / 3

    x, y = f32(1000), f32(1000)
    (value, out), *_, fast = run_both(fn, x, y)
    assert value.dtype == np.float32 and out.dtype == np.float32
    kernels = fast.trace(x, y).executable.kernels()  # the loops are kernels' (outlined)
    assert kernels
    # compiled again here: a kernel another test compiled comes from the disk cache, whose
    # code Numba cannot show
    options = [{key: v for key, v in k.targetoptions.items() if key != "nopython"} for k in kernels]
    fresh = [numba.njit(**{**o, "cache": False})(k.py_func) for o, k in zip(options, kernels)]
    for f, k in zip(fresh, kernels):
        for signature in k.signatures:
            f.compile(signature)
    llvm = "\n".join(text for f in fresh for text in f.inspect_llvm().values())
    # native functions only (the CPython wrapper boxes the float32 result as a double)
    native = [f for f in llvm.split("\ndefine ")[1:] if "cpython" not in f.split("\n")[0]]
    assert native
    for function in native:
        assert "fpext" not in function and " double " not in function, function[:200]


@pytest.mark.parametrize("shape", [(7,), (2, 3, 4)])
def test_kernel_flat_reduction_matches_interpreter(shape):
    x = f32(*shape)
    *_, source, _ = run_both(lambda v: (np.sum(v * v), np.exp(v).sum(axis=-1)), x)
    assert "fastmath" in source  # float sums may reassociate (vectorised partial sums)


def test_kernel_mixed_reductions_keep_row_accumulators_local():
    """Row reductions (the inner axis) beside a column sum (the outer axes): the row
    accumulators are locals started inside the outer loop, the column sum updates its array
    in the inner loop (before, every accumulator was an array element updated innermost)."""
    def fn(a, g):
        y = a * g
        return np.sum(y, axis=2), np.sum(y * a, axis=(0, 1)), np.max(y, axis=2)

    *_, source, _ = run_both(fn, f32(3, 4, 5), f32(5))
    nest = source[source.index("for i0 in"):]
    assert re.search(r"for i0 in .*\n +(\w+)_acc = np\.float32\(0\)\n", nest)
    assert re.search(r"\n +(\w+)_acc = np\.float32\(-np\.inf\)\n", nest)
    assert re.search(r"\n +\w+\[i1\] \+= ", nest)
