"""runtime.training.optim: updates vs the textbook (PyTorch) formulas, traced vs eager,
schedules, state checks; runtime.training.init: bounds and reproducibility;
runtime.training.checkpoint round trips."""

import numpy as np
import pytest

from compiler import compile, tree_flatten
from runtime import checkpoint, init, optim

RNG = np.random.default_rng(1)


def _params():
    return {"w": RNG.standard_normal((3, 2)).astype(np.float32),
            "layers": [RNG.standard_normal(4).astype(np.float32)]}


def _grads_sequence(params, steps=3):
    return [{"w": RNG.standard_normal((3, 2)).astype(np.float32),
             "layers": [RNG.standard_normal(4).astype(np.float32)]} for _ in range(steps)]


def _run(opt, params, grads_seq):
    state = opt.init(params)
    for grads in grads_seq:
        params, state = opt.update(grads, state, params)
    return params, state


def _reference_sgd(p, gs, lr, momentum, nesterov, wd):
    buf = np.zeros_like(p)
    for g in gs:
        g = g + wd * p
        buf = momentum * buf + g
        p = p - lr * (g + momentum * buf if nesterov else (buf if momentum else g))
    return p


def _reference_adam(p, gs, lr, b1, b2, eps, decoupled_wd=0.0):
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(gs, start=1):
        p = p * (1 - lr * decoupled_wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - (lr / (1 - b1**t)) * m / (np.sqrt(v / (1 - b2**t)) + eps)
    return p


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0),
                                                  (0.9, True, 1e-2), (0.0, False, 0.1)])
def test_sgd_matches_reference(momentum, nesterov, wd):
    params, seq = _params(), _grads_sequence(_params())
    new, state = _run(optim.SGD(0.1, momentum, nesterov, wd), params, seq)
    expected = _reference_sgd(params["w"], [g["w"] for g in seq], 0.1, momentum, nesterov, wd)
    np.testing.assert_allclose(new["w"], expected, rtol=1e-5, atol=1e-6)
    assert int(state["count"]) == 3


def test_adam_matches_reference():
    params, seq = _params(), _grads_sequence(_params(), 4)
    new, state = _run(optim.Adam(0.01), params, seq)
    expected = _reference_adam(params["w"], [g["w"] for g in seq], 0.01, 0.9, 0.999, 1e-8)
    np.testing.assert_allclose(new["w"], expected, rtol=1e-5, atol=1e-6)
    assert set(state) == {"count", "m", "v"} and isinstance(state["m"]["layers"], list)


def test_adamw_decouples_weight_decay():
    params, seq = _params(), _grads_sequence(_params(), 4)
    new, _ = _run(optim.AdamW(0.01, weight_decay=0.1), params, seq)
    expected = _reference_adam(params["layers"][0], [g["layers"][0] for g in seq], 0.01, 0.9,
                               0.999, 1e-8, decoupled_wd=0.1)
    np.testing.assert_allclose(new["layers"][0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opt", [optim.SGD(0.1, momentum=0.9, nesterov=True),
                                 optim.Adam(optim.warmup(optim.cosine(0.01, 10), 3)),
                                 optim.AdamW(optim.step_decay(0.01, [1, 2], 0.5))])
def test_update_traced_matches_eager_and_keeps_dtypes(opt):
    params = _params()
    grads = _grads_sequence(params, 1)[0]
    state = opt.init(params)
    eager = opt.update(grads, state, params)
    traced = compile(opt.update, backend="interpreter")(grads, state, params)
    traced_leaves, eager_leaves = tree_flatten(traced)[0], tree_flatten(eager)[0]
    assert len(traced_leaves) == len(eager_leaves)
    for a, b in zip(traced_leaves, eager_leaves):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert traced[0]["w"].dtype == np.float32 and eager[0]["w"].dtype == np.float32


def test_schedules_values():
    at = lambda schedule, t: float(schedule(np.int64(t)))
    assert at(optim.constant(0.5), 7) == 0.5
    assert [at(optim.step_decay(1.0, [2, 4], 0.1), t) for t in (0, 2, 5)] == \
        pytest.approx([1.0, 0.1, 0.01])
    cos = optim.cosine(1.0, 10, final_lr=0.1)
    assert [at(cos, t) for t in (0, 5, 10, 20)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    ramp = optim.warmup(1.0, 4)
    assert [at(ramp, t) for t in (0, 1, 3, 9)] == pytest.approx([0.25, 0.5, 1.0, 1.0])


def test_schedule_traces_from_state_count():
    f = compile(optim.cosine(1.0, 10), backend="interpreter")
    assert float(f(np.int64(5))) == pytest.approx(0.5)


def test_update_with_mismatched_tree_raises():
    opt = optim.Adam(1e-3)
    params = _params()
    state = opt.init(params)
    params["extra"] = np.zeros(2, np.float32)
    with pytest.raises(optim.StateMismatchError, match=r"state\['m'\] has structure"):
        opt.update(params, state, params)


def test_update_with_mismatched_shape_raises():
    opt = optim.SGD(0.1, momentum=0.9)
    params = _params()
    state = opt.init(params)
    params["w"] = np.zeros((4, 2), np.float32)
    with pytest.raises(optim.StateMismatchError, match=r"\(4, 2\).*\(3, 2\)"):
        opt.update(params, state, params)


def test_state_of_another_optimizer_raises():
    params = _params()
    with pytest.raises(optim.StateMismatchError, match="Adam state must have keys"):
        optim.Adam(0.1).update(params, optim.SGD(0.1).init(params), params)


def test_gradients_not_matching_params_raise():
    params = _params()
    grads = {"w": np.zeros((3, 2), np.float32)}
    with pytest.raises(optim.StateMismatchError, match="gradients"):
        optim.SGD(0.1).update(grads, optim.SGD(0.1).init(params), params)


def test_init_rejects_python_scalars():
    with pytest.raises(TypeError, match="float NumPy arrays"):
        optim.Adam(0.1).init({"w": 1.0})


# -- initialisers ---------------------------------------------------------------------------


def test_initialisers_bounds_fans_and_seeds():
    w = init.glorot_uniform(0, (100, 50))
    assert w.dtype == np.float32 and np.abs(w).max() <= np.sqrt(6 / 150)
    np.testing.assert_array_equal(w, init.glorot_uniform(0, (100, 50)))
    assert init.fans((8, 3, 3, 3)) == (27, 72)
    conv = init.he_normal(np.random.default_rng(2), (64, 16, 3, 3))
    assert abs(conv.std() - np.sqrt(2 / 144)) < 0.01
    assert abs(init.glorot_normal(3, (400, 400)).std() - np.sqrt(2 / 800)) < 0.002
    assert np.abs(init.he_uniform(4, (10, 5))).max() <= np.sqrt(6 / 10)
    assert not init.zeros((2, 3)).any()


# -- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_round_trip_keeps_structure_and_dtypes(tmp_path):
    params = _params()
    state = optim.Adam(0.1).init(params)
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, params, state)
    loaded_params, loaded_state = checkpoint.load(path)
    assert isinstance(loaded_params["layers"], list)
    np.testing.assert_array_equal(loaded_params["w"], params["w"])
    assert loaded_state["count"].dtype == np.int64
    with np.load(path) as raw:
        assert "params/layers/0" in raw.files and "state/m/w" in raw.files


def test_checkpoint_restore_in_place_and_mismatch(tmp_path):
    params = _params()
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, params)
    target = {"w": np.zeros((3, 2), np.float32), "layers": [np.zeros(4, np.float32)]}
    w_array = target["w"]
    checkpoint.restore(path, target)
    assert target["w"] is w_array
    np.testing.assert_array_equal(w_array, params["w"])
    with pytest.raises(checkpoint.CheckpointMismatchError, match="structure"):
        checkpoint.restore(path, {"w": w_array})
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"params/w.*\(3, 2\)"):
        checkpoint.restore(path, {"w": np.zeros(3, np.float32), "layers": target["layers"]})
