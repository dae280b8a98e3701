"""runtime.training: train_step (step.py: one compiled call, in-place updates, the checks before
the call, NaN diagnosis) and fit (batches, one signature per phase, history, progress, resume)."""

import io

import numpy as np
import pytest

from compiler import nn
from compiler.transforms import value_and_grad
from ir.ops import Op
from runtime import checkpoint, optim
from runtime.training.loop import fit
from runtime.training.step import FitError, NonFiniteLossError, train_step

BACKEND = "interpreter"  # the step's logic; the examples test runs the default backend
RNG = np.random.default_rng(0)
X = RNG.standard_normal((50, 4)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"w": (rng.standard_normal((4, 3)) * 0.1).astype(np.float32),
            "b": np.zeros(3, np.float32)}


def loss_fn(params, x, y):
    return nn.cross_entropy(x @ params["w"] + params["b"], y)


def loss_with_aux(params, x, y):
    logits = x @ params["w"] + params["b"]
    return nn.cross_entropy(logits, y), {"accuracy": nn.accuracy(logits, y)}


def accuracy(params, x, y):
    return nn.accuracy(x @ params["w"] + params["b"], y)


def _step(opt=None, **kw):
    return train_step(loss_fn, opt or optim.SGD(0.5), backend=BACKEND, **kw)


def test_train_step_updates_params_in_place_and_matches_eager():
    params, opt = _params(), optim.Adam(0.1)
    w_array = params["w"]
    step = _step(opt)
    loss = step(params, X[:10], Y[:10])
    value, grads = value_and_grad(loss_fn)(_params(), X[:10], Y[:10])
    expected, _ = opt.update(grads, opt.init(_params()), _params())
    assert float(loss) == pytest.approx(float(value), rel=1e-6)
    assert params["w"] is w_array
    np.testing.assert_allclose(w_array, expected["w"], rtol=1e-5, atol=1e-7)
    assert int(step.state["count"]) == 1


def test_train_step_is_one_graph_with_forward_backward_and_update():
    params, step = _params(), _step(optim.Adam(0.1))
    step(params, X[:10], Y[:10])
    step(params, X[10:20], Y[10:20])
    assert step.signatures == 1
    graph = step.compiled.trace(params, step.state, X[:10], Y[:10]).graph
    assert [n.op for n in graph.nodes].count(Op.MATMUL) >= 2  # forward + backward of x @ w
    assert any(n.op is Op.SQRT for n in graph.nodes)  # Adam's update is inside too
    assert len(graph.outputs) == 1 + 2 + 1 + 4  # loss, params, count, m and v


def test_train_step_loss_decreases():
    params, step = _params(), _step(optim.SGD(0.5, momentum=0.9))
    losses = [float(step(params, X, Y)) for _ in range(30)]
    assert losses[-1] < 0.6 * losses[0]


def test_train_step_has_aux_returns_metrics():
    step = train_step(loss_with_aux, optim.SGD(0.1), has_aux=True, backend=BACKEND)
    loss, aux = step(_params(), X, Y)
    assert np.isfinite(loss) and 0.0 <= float(aux["accuracy"]) <= 1.0


def test_train_step_labels_out_of_range_raise_before_the_call():
    params, step = _params(), _step()
    before = params["w"].copy()
    bad = Y[:10].copy()
    bad[3] = 3
    with pytest.raises(nn.LabelRangeError, match=r"labels .*\[0, 3\).*first: 3"):
        step(params, X[:10], bad)
    np.testing.assert_array_equal(params["w"], before)


def test_train_step_mismatched_batch_sizes_raise():
    with pytest.raises(ValueError, match=r"mismatched batch sizes.*argument 0: 10.*argument 1: 9"):
        _step()(_params(), X[:10], Y[:9])


def test_train_step_params_not_matching_state_raise():
    step = _step(optim.Adam(0.1))
    step(_params(), X[:10], Y[:10])
    other = {**_params(), "extra": np.zeros(3, np.float32)}
    with pytest.raises(optim.StateMismatchError, match="do not match the optimiser state"):
        step(other, X[:10], Y[:10])


def test_train_step_steady_state_skips_the_checks_and_commit(monkeypatch):
    params, step = _params(), _step(optim.Adam(0.1))
    step(params, X[:10], Y[:10])  # the signature's first call: every check

    def fail(*args):
        raise AssertionError("per-signature work done again")

    monkeypatch.setattr("runtime.training.step.commit", fail)
    monkeypatch.setattr(step.optimizer, "check", fail)
    monkeypatch.setattr(step, "_find_labels", fail)
    w = params["w"]
    step(params, X[10:20], Y[10:20])
    assert params["w"] is w and int(step.state["count"]) == 2
    monkeypatch.undo()
    with pytest.raises(ValueError, match="mismatched batch sizes"):  # a new signature
        step(params, X[:10], Y[:9])


@pytest.mark.parametrize("label", [3, -1])
def test_train_step_steady_state_still_checks_label_ranges(label):
    params, step = _params(), _step()
    step(params, X[:10], Y[:10])
    step(params, X[:10], Y[:10])
    before = params["w"].copy()
    bad = Y[:10].copy()
    bad[5] = label
    with pytest.raises(nn.LabelRangeError, match=rf"\[0, 3\).*first: {label}"):
        step(params, X[:10], bad)
    np.testing.assert_array_equal(params["w"], before)
    assert int(step.state["count"]) == 2


def test_train_step_steady_state_nan_keeps_params():
    params, step = _params(), _step(optim.SGD(0.1, momentum=0.9))
    step(params, X[:10], Y[:10])
    before, momentum = params["w"].copy(), step.state["momentum"]["w"].copy()
    bad = X[:10].copy()
    bad[2, 1] = np.nan
    with pytest.raises(NonFiniteLossError, match="not updated"):
        step(params, bad, Y[:10])
    np.testing.assert_array_equal(params["w"], before)
    np.testing.assert_array_equal(step.state["momentum"]["w"], momentum)
    step(params, X[:10], Y[:10])  # and training goes on
    assert int(step.state["count"]) == 2


def log_loss(params, x, y):
    h = x @ params["w"] + params["b"]
    return np.mean(np.log(h))  # NaN wherever h < 0


def test_train_step_nan_names_the_first_bad_node_and_keeps_params():
    params = _params()
    before = params["w"].copy()
    step = train_step(log_loss, optim.SGD(0.1), backend=BACKEND)
    with pytest.raises(NonFiniteLossError, match=r"op log .*\n.*test_training.py:\d+") as info:
        step(params, X[:10], Y[:10])
    assert "np.log(h)" in str(info.value)
    np.testing.assert_array_equal(params["w"], before)


def test_fit_nan_reports_epoch_step_and_batch():
    params = {"w": np.full((4, 3), 0.01, np.float32), "b": np.ones(3, np.float32)}
    x = np.concatenate([np.zeros((32, 4), np.float32), np.full((16, 4), -1e3, np.float32)])
    with pytest.raises(FitError, match=r"(?s)epoch 1, step 3 \(batch index 2 .*op log"):
        fit(log_loss, params, (x, Y[:48]), optim.SGD(0.1), epochs=2, batch_size=16,
            progress=False, shuffle=False, backend=BACKEND)


def test_fit_drops_partial_batch_one_signature_per_phase():
    params = _params()
    stream = io.StringIO()
    history = fit(loss_fn, params, (X, Y), optim.Adam(0.05), epochs=3, batch_size=16,
                  eval_data=(X[:13], Y[:13]), metrics={"accuracy": accuracy},
                  stream=stream, backend=BACKEND)
    assert history.step.signatures == 1  # 50 = 3 * 16 + 2: the partial batch is dropped
    assert len(history.eval_fn._traces) == 1
    assert int(history.step.state["count"]) == 3 * 3
    assert set(history) >= {"loss", "epoch_time", "samples_per_sec", "eval_loss",
                            "eval_accuracy"}
    assert all(len(v) == 3 for v in history.values())
    assert history["loss"][-1] < history["loss"][0]
    output = stream.getvalue()
    assert "\r" in output and "samples/s" in output and "epoch 3/3" in output


def test_fit_is_reproducible_with_a_seed():
    a, b = _params(), _params()
    for params in (a, b):
        fit(loss_fn, params, (X, Y), optim.SGD(0.1), epochs=2, batch_size=8, seed=3,
            progress=False, backend=BACKEND)
    np.testing.assert_array_equal(a["w"], b["w"])


def test_fit_has_aux_records_train_metrics():
    history = fit(loss_with_aux, _params(), (X, Y), optim.SGD(0.1), epochs=2, batch_size=10,
                  has_aux=True, progress=False, backend=BACKEND)
    assert len(history["train_accuracy"]) == 2


def test_fit_checkpoint_resume_matches_uninterrupted_training(tmp_path):
    path = tmp_path / "run.npz"
    straight = _params()
    opt = optim.Adam(0.05)
    step = train_step(loss_fn, opt, backend=BACKEND)
    for i in range(4):
        step(straight, X[10 * i : 10 * i + 10], Y[10 * i : 10 * i + 10])

    first = _params()
    step = train_step(loss_fn, opt, backend=BACKEND)
    for i in range(2):
        step(first, X[10 * i : 10 * i + 10], Y[10 * i : 10 * i + 10])
    checkpoint.save(path, first, step.state)
    params, state = checkpoint.load(path)
    resumed = train_step(loss_fn, opt, backend=BACKEND)
    resumed.state = state
    for i in range(2, 4):
        resumed(params, X[10 * i : 10 * i + 10], Y[10 * i : 10 * i + 10])
    np.testing.assert_allclose(params["w"], straight["w"], rtol=1e-6)
    assert int(resumed.state["count"]) == 4


def test_fit_saves_checkpoint_each_epoch(tmp_path):
    path = tmp_path / "fit.npz"
    params = _params()
    history = fit(loss_fn, params, (X, Y), optim.Adam(0.05), epochs=1, batch_size=10,
                  progress=False, checkpoint=str(path), backend=BACKEND)
    saved, state = checkpoint.load(path)
    np.testing.assert_array_equal(saved["w"], params["w"])
    assert int(state["count"]) == int(history.step.state["count"]) == 5


def test_fit_mismatched_data_lengths_raise():
    with pytest.raises(ValueError, match="mismatched batch sizes in the training data"):
        fit(loss_fn, _params(), (X, Y[:-1]), optim.SGD(0.1), progress=False, backend=BACKEND)
