"""Donation (outputs written into their input arrays) and the work-buffer plan, on Numba:
in place where safe, deferred or copied where not, guarded by a finite loss, and the same
values as the interpreter every time."""

import itertools
import re

import numpy as np
import pytest

from compiler import compile, value_and_grad
from runtime import optim, train_step
from runtime.execution.executable import ArgumentError


def loss(params, x):
    h = np.tanh(x @ params["w"] + params["b"])
    return np.mean(h * h)


def sgd_step(params, state, x):
    value, grads = value_and_grad(loss)(params, x)
    new = {k: params[k] - 0.1 * (grads[k] + 0.5 * state["m"][k]) for k in params}
    return value, new, {"m": grads, "count": state["count"] + 1}


def _setup(rng, dtype=np.float32):
    params = {"w": rng.standard_normal((5, 3)).astype(dtype), "b": np.zeros(3, dtype)}
    state = {"m": {k: np.ones_like(v) for k, v in params.items()}, "count": np.array(0)}
    return params, state, rng.standard_normal((4, 5)).astype(dtype)


def _copy(tree):
    return {k: _copy(v) if isinstance(v, dict) else v.copy() for k, v in tree.items()}


def test_donated_step_updates_inputs_in_place_with_the_interpreters_values():
    rng = np.random.default_rng(0)
    params, state, x = _setup(rng)
    want = compile(sgd_step, backend="interpreter")(_copy(params), _copy(state), x)
    step = compile(sgd_step, donate_argnums=(0, 1))
    ids = {k: id(v) for k, v in params.items()}
    value, new_params, new_state = step(params, state, x)
    assert all(new_params[k] is params[k] and id(params[k]) == ids[k] for k in params)
    assert new_state["m"]["w"] is state["m"]["w"] and new_state["count"] is state["count"]
    np.testing.assert_allclose(value, want[0], rtol=1e-5)
    for k in params:
        np.testing.assert_allclose(params[k], want[1][k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state["m"][k], want[2]["m"][k], rtol=1e-5, atol=1e-6)
    assert int(state["count"]) == 1
    executable = step.trace(params, state, x).executable
    modes = {mode for _, mode in executable.donation.values()}
    assert "direct" in modes  # the update kernels write straight into the parameters
    assert "python" not in modes  # even the 0-d count is written by the driver
    # the second call takes the fast path and keeps updating the same arrays
    step(params, state, x)
    assert int(state["count"]) == 2 and new_params["w"] is params["w"]


def test_guard_leaves_donated_inputs_unchanged_when_the_loss_is_not_finite():
    rng = np.random.default_rng(1)
    params, state, x = _setup(rng)
    step = compile(sgd_step, donate_argnums=(0, 1), donate_guard=0)
    step(params, state, x)
    before, before_state = _copy(params), _copy(state)
    bad = x.copy()
    bad[0, 0] = np.nan
    for _ in range(2):  # checked path, then the fast path
        value, new_params, _ = step(params, state, bad)
        assert not np.isfinite(value)
        assert new_params["w"] is params["w"]
        assert int(state["count"]) == int(before_state["count"])
        for k in params:
            np.testing.assert_array_equal(params[k], before[k])
            np.testing.assert_array_equal(state["m"][k], before_state["m"][k])
    # the update kernels run after the loss is known: they write into the parameters
    # directly when it is finite (into a work buffer when not), no copy at the driver's end
    executable = step.trace(params, state, x).executable
    assert "direct" in {mode for _, mode in executable.donation.values()}
    want = compile(sgd_step, backend="interpreter")(_copy(params), _copy(state), x)
    value, new_params, _ = step(params, state, x)  # a finite step after the bad ones
    np.testing.assert_allclose(value, want[0], rtol=1e-5)
    for k in params:
        np.testing.assert_allclose(params[k], want[1][k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state["m"][k], want[2]["m"][k], rtol=1e-5, atol=1e-6)
    assert int(state["count"]) == int(want[2]["count"])


def _in_place_kernels(source: str) -> list[tuple[str, str, str]]:
    """(output, input, the kernel's other lines) per direct write."""
    found = []
    for block in source.split("\n\n"):
        for line in block.splitlines():
            if "# in place (donated)" in line:
                out, inp = line.split("#")[0].strip().split(" = ")
                found.append((out, inp, block.replace(line, "")))
    return found


@pytest.mark.parametrize("guard", [None, 0])
def test_in_place_kernels_read_old_values_through_the_output(guard):
    """`w[i] = w[i] - c * g[i]`: one array read and written, which LLVM vectorises (with the
    input and the output as two names of one memory it did not: 3-4x slower updates). Under a
    guard, the non-finite branch makes the output a copy of the input first."""
    rng = np.random.default_rng(4)
    params, state, x = _setup(rng)
    step = compile(sgd_step, donate_argnums=(0, 1), donate_guard=guard)
    kernels = _in_place_kernels(step.source(params, state, x))
    assert len(kernels) >= 2
    for out, inp, rest in kernels:
        loops = r"else:  # a copy to update\n(?: +for .*\n)+ +"
        copy = re.search(loops + rf"({out}\[.*\] = {inp}\[.*\])", rest)
        assert bool(copy) == (guard is not None), rest
        rest = rest.replace(copy.group(1), "") if copy else rest
        assert f"{inp}[" not in rest and f"{inp}.reshape" not in rest, (out, inp, rest)


def swap_and_reuse(a, b):
    # outputs read the donated inputs after other outputs are computed from them
    return (b * 1.0, a + b, np.sum(a)), a


def test_outputs_that_alias_other_donated_inputs_are_still_right():
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal(6).astype(np.float32) for _ in range(2))

    def f(pair, c):
        x, y = pair
        return (y, x * 2.0 + c), np.sum(x)

    step = compile(f, donate_argnums=0)
    want = (b.copy(), a * 2.0 + 1.0, a.sum())
    for _ in range(2):
        pair = (a.copy(), b.copy())
        (p, q), s = step(pair, 1.0)
        assert p is pair[0] and q is pair[1]
        np.testing.assert_allclose(p, want[0])
        np.testing.assert_allclose(q, want[1], rtol=1e-6)
        np.testing.assert_allclose(s, want[2], rtol=1e-5)


def test_donated_non_contiguous_and_read_only_arguments():
    def f(w, g):
        return w - 0.5 * g

    step = compile(f, donate_argnums=0)
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    w = base.T  # a transposed view: run on a C copy, copied back
    want = w - 0.5
    out = step(w, np.ones((4, 3), np.float32))
    assert out is w
    np.testing.assert_allclose(base.T, want)
    frozen = np.zeros((4, 3), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ArgumentError, match="donated"):
        step(frozen, np.ones((4, 3), np.float32))


def two_layers(params, x):
    h = np.maximum(x @ params["w"] + params["b"], 0.0)
    return np.mean(np.tanh(h @ params["w2"]) ** 2)


def test_work_buffers_share_slots_and_serve_a_new_batch_size():
    rng = np.random.default_rng(3)
    params, _, x = _setup(rng)
    params["w2"] = rng.standard_normal((3, 2)).astype(np.float32)
    loss = two_layers
    f = compile(value_and_grad(loss))
    f(params, x)
    executable = f.trace(params, x).executable
    plan = executable.plan
    assert plan.buffers and executable.extra[-1].ndim == 1  # one flat workspace
    slots = [slot for per_dtype in plan.slots.values() for slot in per_dtype]
    assert sum(len(slot) for slot in slots) == len(plan.buffers)
    assert len(slots) < len(plan.buffers)  # some slot is shared by buffers live at other times
    for slot in slots:  # members of a slot are never live at the same time
        spans = sorted((b.start, b.end) for b in slot)
        assert all(prev[1] < nxt[0] for prev, nxt in itertools.pairwise(spans))
    summary = f.summary(params, x)  # ONE plan: the one the driver uses
    assert summary.count("buffer plan:") == 1
    assert f"buffer plan: {len(plan.buffers)} buffers in {len(slots)} slots, " \
        f"{plan.arena_bytes} bytes" in summary
    assert executable.extra[-1].size == plan.totals[np.dtype(np.float32)]
    x8 = rng.standard_normal((8, 5)).astype(np.float32)
    value, grads = f(params, x8)
    want = compile(value_and_grad(loss), backend="interpreter")(params, x8)
    np.testing.assert_allclose(value, want[0], rtol=1e-5)
    np.testing.assert_allclose(grads["w"], want[1]["w"], rtol=1e-4, atol=1e-6)
    assert f.trace(params, x8).executable.driver is executable.driver  # same machine code


def test_train_step_on_numba_updates_params_without_copies():
    rng = np.random.default_rng(4)
    params, _, x = _setup(rng)
    reference = _copy(params)
    step = train_step(loss, optim.SGD(0.1, momentum=0.9), backend="numba")
    eager = train_step(loss, optim.SGD(0.1, momentum=0.9), backend="interpreter")
    held = params["w"]
    for _ in range(3):
        step(params, x)
        eager(reference, x)
    assert params["w"] is held
    for k in params:
        np.testing.assert_allclose(params[k], reference[k], rtol=1e-4, atol=1e-6)
