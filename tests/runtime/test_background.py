"""A train step's first calls run on the reference interpreter while it compiles on a thread
(runtime/background.py), then the compiled code takes over; parameters, optimiser state and
donation behave the same on both paths."""

from __future__ import annotations

import numpy as np

from compiler import compile
from runtime import optim, train_step
from runtime.background import BackgroundBuild, wait_requested

RNG = np.random.default_rng(11)


def _loss(params, x, y):
    h = np.tanh(x @ params["w"] + params["b"])
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
    f = compile(lambda a: np.sum(np.sin(a) * a), wait=False)
    a = RNG.standard_normal(9)
    want = np.sum(np.sin(a) * a)
    np.testing.assert_allclose(f(a), want, rtol=1e-12)  # interpreter
    next(iter(f._traces.values())).executable.wait()
    np.testing.assert_allclose(f(a), want, rtol=1e-12)  # compiled
    assert hasattr(next(iter(f._traces.values())).executable, "driver")
