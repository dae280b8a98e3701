"""A train step's first calls run on the reference interpreter while it compiles on a thread
(runtime/execution/background.py), then the compiled code takes over; parameters, optimiser
state and donation behave the same on both paths."""

from __future__ import annotations

import numpy as np

from compiler import compile
from runtime import optim, train_step
from runtime.execution.background import BackgroundBuild, wait_requested

RNG = np.random.default_rng(11)
# A constant of this process's own in every function here: its graph is in no cache (a cached
# one is loaded at once, with nothing to build in the background)
FRESH = float(np.random.default_rng().uniform(1.0, 2.0))


def _loss(params, x, y):
    h = np.tanh(x @ params["w"] + params["b"] * FRESH)
    return np.mean((h @ params["v"] - y) ** 2)


def _params():
    return {"w": RNG.standard_normal((5, 7)).astype(np.float32),
            "b": np.zeros(7, np.float32),
            "v": RNG.standard_normal((7, 2)).astype(np.float32)}


def test_wait_argument_beats_the_environment(monkeypatch):
    monkeypatch.setenv("CHAINJIT_WAIT", "1")
    assert wait_requested(None) and wait_requested(True) and not wait_requested(False)
    monkeypatch.setenv("CHAINJIT_WAIT", "0")
    assert not wait_requested(None)


def test_steps_while_compiling_match_a_waiting_step_and_update_in_place(capsys):
    x = RNG.standard_normal((16, 5)).astype(np.float32)
    y = RNG.standard_normal((16, 2)).astype(np.float32)
    params = _params()
    ref = {k: v.copy() for k, v in params.items()}
    ids = {k: id(v) for k, v in params.items()}
    step = train_step(_loss, optim.Adam(1e-2), wait=False)
    ref_step = train_step(_loss, optim.Adam(1e-2), wait=True)
    first = step(params, x, y)  # answered at once, on the interpreter
    traced = next(iter(step.compiled._traces.values()))
    building = traced.executable
    assert isinstance(building, BackgroundBuild) and building.served == 1
    np.testing.assert_allclose(first, ref_step(ref, x, y), rtol=1e-5)
    building.wait()
    for _ in range(3):  # the first of these switches to the compiled step
        np.testing.assert_allclose(step(params, x, y), ref_step(ref, x, y), rtol=1e-4)
    assert not isinstance(traced.executable, BackgroundBuild)  # compiled now
    for k in params:
        assert id(params[k]) == ids[k]  # updated in place on both paths
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(step.state["count"], ref_step.state["count"])
    err = capsys.readouterr().err
    assert "in the background" in err and "compiled in" in err


def test_a_compiled_function_with_wait_false_gives_the_compiled_result_after():
    f = compile(lambda a: np.sum(np.sin(a) * a * FRESH), wait=False)
    a = RNG.standard_normal(9)
    want = np.sum(np.sin(a) * a * FRESH)
    np.testing.assert_allclose(f(a), want, rtol=1e-12)  # interpreter
    next(iter(f._traces.values())).executable.wait()
    np.testing.assert_allclose(f(a), want, rtol=1e-12)  # compiled
    assert hasattr(next(iter(f._traces.values())).executable, "driver")


def test_the_background_compile_runs_in_a_child_process():
    """Numba compiles in a process of its own (runtime/execution/compile_worker.py); this
    process only loads the machine code, so the interpreter's calls here do not slow the compile."""
    from tests.compiler.test_codegen_outline import _Compiles

    f = compile(lambda a, b: np.tanh(a @ b + FRESH).sum(), wait=False)
    a, b = RNG.standard_normal((5, 3)), RNG.standard_normal((3, 4))
    with _Compiles() as compiles:
        f(a, b)
        next(iter(f._traces.values())).executable.wait()
        np.testing.assert_allclose(f(a, b), np.tanh(a @ b + FRESH).sum(), rtol=1e-12)
    assert not [m for m in compiles.modules if m.startswith(("chainjit_gen_", "chainjit_k_"))]


def test_without_a_child_process_the_compile_happens_here(monkeypatch):
    import compiler.build

    monkeypatch.setattr(compiler.build, "compile_elsewhere", lambda *args: False)
    f = compile(lambda a: np.cos(a * FRESH).sum(), wait=False)
    a = RNG.standard_normal(7)
    f(a)
    next(iter(f._traces.values())).executable.wait()
    np.testing.assert_allclose(f(a), np.cos(a * FRESH).sum(), rtol=1e-12)
    assert hasattr(next(iter(f._traces.values())).executable, "driver")
