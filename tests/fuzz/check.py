"""The four-way check of fuzzed programs (tests/fuzz/programs.py).

For each program `f` with output cotangent `W`, the checked function is
`combo(*x) = (f(*x), vjp(f, *x)[1](W)[, hvp])`, run three ways:

1. eagerly in NumPy (the reference value of `f`);
2. compiled with the reference interpreter (chainjit's semantics: trace, autodiff, passes);
3. compiled with Numba, several programs in one compiled call (one build per batch).

Checks: the compiled value (interpreter and Numba) against NumPy; the Numba gradient against
the interpreter's; the interpreter's gradient, in float64, against central finite
differences of the NumPy program along a random direction (one inner product, autograd's
check); and on a subset grad of grad, a Hessian-vector product, Numba against interpreter
and against finite differences of the float64 gradient. A program whose trace raises
`UnsupportedError` is a skip, counted under the unsupported function's name.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass

import numpy as np

from compiler import compile, grad, vjp
from compiler.errors import UnsupportedError
from tests.fuzz.programs import Program

RTOL = {np.dtype(np.float32): 2e-3, np.dtype(np.float64): 1e-8}
FD_STEP = 1e-5
FD_RTOL = 1e-5


@dataclass
class Outcome:
    status: str  # "passed", "skipped", "mismatch" or "crash"
    reason: str = ""  # the unsupported function, or what differed / what raised
    program: Program | None = None
    smooth: bool = True  # whether the finite-difference check applied

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}\n{self.program}"


class Mismatch(AssertionError):
    """Two results that should agree do not."""


def combo(program: Program):
    """`f`'s value, its VJP with the program's cotangent and, if asked, an HVP."""
    f = program.function()
    weights = program.cotangent

    def checked(*args):
        out, pullback = vjp(f, *args)
        results = [out, pullback(weights)]
        if program.hvp:
            inner = lambda *a: np.sum(vjp(f, *a)[1](weights)[0] * program.hvp_weights)
            results.append(grad(inner)(*args))
        return tuple(results)

    return checked


def assert_close(got, want, dtype, what: str) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise Mismatch(f"{what}: shape {got.shape}, expected {want.shape}")
    rtol = RTOL[np.dtype(dtype)]
    finite = want[np.isfinite(want)]
    scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    if not np.allclose(got, want, rtol=rtol, atol=rtol * scale, equal_nan=True):
        error = np.nanmax(np.abs(got - want)) if got.size else 0.0
        raise Mismatch(f"{what}: max abs error {error:.3g} (tolerance {rtol * scale:.3g})\n"
                       f"  got      {np.array2string(got.ravel()[:6], precision=5)}\n"
                       f"  expected {np.array2string(want.ravel()[:6], precision=5)}")


def _compare(results, reference, program: Program, eager, label: str) -> None:
    out, grads, *hvp = results
    if np.asarray(out).dtype != np.asarray(eager).dtype:
        raise Mismatch(f"{label} value has dtype {np.asarray(out).dtype}, NumPy gives "
                       f"{np.asarray(eager).dtype}")
    assert_close(out, eager, program.dtype, f"{label} value vs NumPy")
    for k, (g, x) in enumerate(zip(grads, program.inputs)):
        if np.asarray(g).dtype != x.dtype:
            raise Mismatch(f"{label} gradient of {program.names[k]} has dtype "
                           f"{np.asarray(g).dtype}, the input {x.dtype}")
    if reference is None:
        return
    ref_out, ref_grads, *ref_hvp = reference
    for k, (g, r) in enumerate(zip(grads, ref_grads)):
        assert_close(g, r, program.dtype, f"{label} gradient of {program.names[k]} vs "
                     "the interpreter's")
    if hvp:
        assert_close(hvp[0], ref_hvp[0], program.dtype, f"{label} HVP vs the interpreter's")


def _unsupported_name(error: UnsupportedError) -> str:
    match = re.search(r"np\.[\w.]+", error.reason)
    return match.group(0) if match else error.reason.splitlines()[0][:60]


def eager_value(program: Program):
    with np.errstate(all="ignore"):
        return program.function()(*program.inputs)


def check_interpreter(program: Program) -> tuple[Outcome | None, tuple | None]:
    """Trace and run on the interpreter: (an outcome if this already decides, results)."""
    try:
        results = compile(combo(program), backend="interpreter")(*program.inputs)
    except UnsupportedError as error:
        return Outcome("skipped", _unsupported_name(error), program), None
    except Exception:  # noqa: BLE001 - a crash of chainjit on a valid program
        return Outcome("crash", "interpreter: " + _last_line(), program), None
    try:
        _compare(results, None, program, eager_value(program), "interpreter")
    except Mismatch as error:
        return Outcome("mismatch", str(error), program), None
    return None, results


def check_finite_differences(program: Program) -> bool:
    """The float64 gradient (and HVP) against central differences; False when the program
    is not smooth enough here for differences to be a reference (they disagree between two
    step sizes). Raises Mismatch."""
    source = program.source.replace("float32", "float64")
    f64 = Program(source, [x.astype(np.float64) for x in program.inputs],
                  program.cotangent.astype(np.float64), program.direction, program.hvp,
                  program.hvp_weights, program.names).function()
    x = [a.astype(np.float64) for a in program.inputs]
    w = program.cotangent.astype(np.float64)
    v = program.direction

    def loss(*args):
        with np.errstate(all="ignore"):
            return float(np.sum(np.asarray(f64(*args), np.float64) * w))

    grads = vjp(f64, *x)[1](w)
    analytic = sum(float(np.sum(g * d)) for g, d in zip(grads, v))
    scale = 1.0 + sum(float(np.sum(np.abs(g * d))) for g, d in zip(grads, v))
    if not _fd_agrees(loss, x, v, analytic, scale, "gradient"):
        return False
    if program.hvp:
        u, v0 = program.hvp_weights, [v[0]] + [np.zeros_like(d) for d in v[1:]]

        def inner(*args):
            return float(np.sum(vjp(f64, *args)[1](w)[0] * u))

        hvp = grad(lambda *a: np.sum(vjp(f64, *a)[1](w)[0] * u))(*x)
        analytic = float(np.sum(hvp * v[0]))
        return _fd_agrees(inner, x, v0, analytic, 1.0 + float(np.sum(np.abs(hvp * v[0]))),
                          "HVP")
    return True


def _fd_agrees(loss, x, v, analytic: float, scale: float, what: str) -> bool:
    def central(h):
        plus = loss(*[a + h * d for a, d in zip(x, v)])
        minus = loss(*[a - h * d for a, d in zip(x, v)])
        return (plus - minus) / (2 * h)

    coarse, fine = central(FD_STEP), central(FD_STEP / 4)
    if not (np.isfinite(coarse) and np.isfinite(fine)) or \
            abs(coarse - fine) > 1e-6 * scale:
        return False  # a kink or a discontinuity within the step: no reference here
    if abs(fine - analytic) > FD_RTOL * scale:
        raise Mismatch(f"float64 {what} vs finite differences: <{what}, v> = {analytic:.8g}, "
                       f"central difference {fine:.8g}")
    return True


def check_batch(programs: list[Program], numba: bool = True) -> list[Outcome]:
    """Outcomes for the programs; the Numba runs share one compiled call."""
    outcomes: dict[int, Outcome] = {}
    reference: dict[int, tuple] = {}
    for k, program in enumerate(programs):
        outcome, results = check_interpreter(program)
        if outcome is not None:
            outcomes[k] = outcome
            continue
        reference[k] = results
        try:
            smooth = check_finite_differences(program)
        except Mismatch as error:
            outcomes[k] = Outcome("mismatch", str(error), program)
            continue
        except Exception:  # noqa: BLE001
            outcomes[k] = Outcome("crash", "eager float64: " + _last_line(), program)
            continue
        outcomes[k] = Outcome("passed", "", program, smooth)
    live = [k for k in reference if outcomes[k].status == "passed"]
    if numba and live:
        _check_numba(programs, live, reference, outcomes)
    return [outcomes[k] for k in range(len(programs))]


def _check_numba(programs, live, reference, outcomes) -> None:
    combos = [combo(programs[k]) for k in live]

    def batch(groups):
        return [c(*g) for c, g in zip(combos, groups)]

    try:
        results = compile(batch)([list(programs[k].inputs) for k in live])
    except Exception:  # noqa: BLE001 - find which program breaks the build alone
        if len(live) == 1:
            outcomes[live[0]] = Outcome("crash", "numba: " + _last_line(), programs[live[0]])
            return
        for k in live:
            _check_numba(programs, [k], reference, outcomes)
        return
    for k, result in zip(live, results):
        try:
            _compare(result, reference[k], programs[k], eager_value(programs[k]), "numba")
        except Mismatch as error:
            outcomes[k] = Outcome("mismatch", str(error), programs[k])


def _last_line() -> str:
    lines = traceback.format_exc().strip().splitlines()
    return " | ".join(lines[-3:])[-400:]
