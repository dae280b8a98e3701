"""The profiler (compiler/profile.py, compiler/codegen/profile.py, runtime/execution/machine.py):
its rows cover every kernel call of the driver, name their node and source line, count a product's
FLOPs, add up to the step; it leaves donated arguments alone, works for an MLP and a CNN step, and
`fit(..., profile=True)` prints it once."""

import builtins
import io
import json
import re

import numpy as np
import pytest

from compiler import compile, nn, tree_flatten, value_and_grad
from compiler.codegen.profile import instrument
from compiler.kernels.clock import read_clock, ticks_per_second
from runtime import fit, optim, train_step
from runtime.execution import machine as machine_module

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _known_peak(monkeypatch):
    """A fixed roofline (no second of measuring per session): 100 GFLOP/s, 10 / 50 GB/s."""
    monkeypatch.setenv("CHAINJIT_PEAK", "100,10,50")
    machine_module.machine.cache_clear()
    yield
    machine_module.machine.cache_clear()


def _mlp_loss(params, x, y):
    h = np.maximum(x @ params["w1"] + params["b1"], 0.0)
    return nn.cross_entropy(h @ params["w2"] + params["b2"], y)


def _mlp(batch=16):
    params = {"w1": RNG.normal(0, 0.1, (24, 32)).astype(np.float32),
              "b1": np.zeros(32, np.float32),
              "w2": RNG.normal(0, 0.1, (32, 10)).astype(np.float32),
              "b2": np.zeros(10, np.float32)}
    return params, RNG.normal(size=(batch, 24)).astype(np.float32), RNG.integers(0, 10, batch)


def _driver_calls(listing: str) -> list[str]:
    driver = listing.split("# ---- kernel module")[0]
    return re.findall(r"^\s+(?:[\w, ]+ = )?(kern_[0-9a-f]{10})\(", driver, re.M)


def test_clock_ticks():
    rate = ticks_per_second()
    assert rate is not None and 1e8 < rate < 1e11
    first = read_clock()
    assert read_clock() > first


def test_instrument_brackets_every_kernel_call():
    source = "\n".join([
        "import numpy as np", "", "",
        "@numba.njit(cache=True)", "def driver(a, b, ws):",
        "    a_s0 = a.shape[0]", "",
        "    # c:f32[4] = exp a    # m.py:3",
        "    c = kern_0123456789(ws, a_s0, a)", "",
        "    # d:f32[4] e:f32[] = fused[kind=reduce shape=(4,)] c b    # m.py:4",
        "    #   f:f32[4] = mul a b    # m.py:4",
        "    k1 = consts_f32[0]",
        "    d, e = kern_abcdef0123(ws, k1, c, b)", "",
        "    kern_fedcba9876(e, b)", "",
        "    return (d, )"])
    text, calls, nodes = instrument(source)
    assert nodes == 2
    assert [c.caller for c in calls] == ["kern_0123456789", "kern_abcdef0123",
                                        "kern_fedcba9876"]
    assert [c.node for c in calls] == [0, 1, None]  # the last block is glue after the nodes
    assert calls[1].comments[0].startswith("d:f32[4] e:f32[] = fused")
    assert "def driver(a, b, ws, prof_t):" in text
    for slot in range(len(calls)):
        assert f"prof_t[{slot}] += clock() - prof_c" in text
    assert "prof_t[3] += clock() - prof_s" in text
    assert text.index("prof_t[3]") < text.index("return (d, )")
    builtins.compile(text, "<instrumented>", "exec")  # valid Python


def test_profile_rows_cover_every_kernel_call_of_an_mlp_step():
    params, x, y = _mlp()
    f = compile(value_and_grad(_mlp_loss))
    value, _ = f(params, x, y)
    profile = f.profile(params, x, y, seconds=0.05)
    calls = _driver_calls(f.source(params, x, y))
    assert [r.kernel for r in profile.rows] == calls
    assert all(r.seconds > 0 for r in profile.rows)
    matmuls = [r for r in profile.rows if r.kind == "matmul"]
    assert len(matmuls) == f.ir(params, x, y, stage="fused").count(" = matmul ") == 5
    forward = matmuls[0]
    assert forward.flops == 2 * 16 * 32 * 24
    assert forward.bound == pytest.approx(max(forward.flops / 100e9, forward.nbytes / 50e9))
    assert "matmul" in forward.ir and forward.source.startswith("test_profile.py:")
    loops = [r for r in profile.rows if r.kind in ("loop", "reduce")]
    assert loops and all(r.flops == 0 and r.nbytes > 0 for r in loops)
    # in every run the kernels add up to no more than the driver (they run inside it), whose
    # glue is a small part of it; the driver's median is the step's, give or take the call
    assert len(profile.samples) == len(profile.totals) == profile.runs
    for kernels, total in zip(profile.samples, profile.totals):
        assert sum(kernels) <= total
    assert np.median([sum(k) / t for k, t in zip(profile.samples, profile.totals)]) > 0.5
    assert 0.1 * profile.step < profile.driver < 10 * profile.step
    assert sum(r.mean for r in profile.rows) <= np.mean(profile.totals)  # inside the driver
    text = str(profile)
    assert text.count("\n") == len(profile.rows) + 4
    assert "roofline bound" in text and "100 GFLOP/s" in text


def test_profile_leaves_donated_arguments_alone():
    params, x, y = _mlp()
    step = train_step(_mlp_loss, optim.SGD(0.1, momentum=0.9))
    step(params, x, y)
    before = {k: v.copy() for k, v in params.items()}
    state = [np.array(a, copy=True) for a in tree_flatten(step.state)[0]]
    profile = step.profile(params, x, y, seconds=0.02)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])
    for a, b in zip(tree_flatten(step.state)[0], state):
        np.testing.assert_array_equal(a, b)
    kinds = {r.kind for r in profile.rows}
    assert "gemm" in kinds  # the SGD updates accumulate into the weights
    gemm = next(r for r in profile.rows if r.kind == "gemm")
    assert gemm.flops > 0 and "gemm[alpha=" in gemm.ir


def test_profile_of_a_cnn_step_counts_convolution_flops():
    def loss(p, x, y):
        h = np.maximum(nn.conv2d(x, p["k"], padding=1), 0.0)
        return nn.cross_entropy(h.reshape(x.shape[0], -1) @ p["w"], y)

    p = {"k": RNG.normal(0, 0.3, (4, 1, 3, 3)).astype(np.float32),
         "w": RNG.normal(0, 0.1, (4 * 6 * 6, 3)).astype(np.float32)}
    x = RNG.normal(size=(2, 1, 6, 6)).astype(np.float32)
    y = RNG.integers(0, 3, 2)
    f = compile(value_and_grad(loss))
    f(p, x, y)
    profile = f.profile(p, x, y, seconds=0.02)
    assert [r.kernel for r in profile.rows] == _driver_calls(f.source(p, x, y))
    conv = [r for r in profile.rows if r.kind == "conv2d"]
    assert conv, [r.kind for r in profile.rows]
    assert conv[0].flops == 2 * (2 * 4 * 6 * 6) * (1 * 3 * 3)


def test_profile_plot_draws_a_bar_per_row(tmp_path):
    pytest.importorskip("matplotlib")
    params, x, y = _mlp()
    f = compile(value_and_grad(_mlp_loss))
    f(params, x, y)
    profile = f.profile(params, x, y, seconds=0.01)
    path = tmp_path / "profile.png"
    fig = profile.plot(str(path))
    assert path.stat().st_size > 1000
    bars = fig.axes[0].patches
    assert len(bars) == 2 * len(profile.rows)  # measured and bound, per row


def test_profile_needs_the_numba_backend():
    params, x, y = _mlp()
    f = compile(_mlp_loss, backend="interpreter")
    with pytest.raises(ValueError, match="interpreter backend"):
        f.profile(params, x, y)


def test_fit_prints_the_profile_once():
    params, x, y = _mlp(batch=64)
    stream = io.StringIO()
    history = fit(_mlp_loss, params, (x, y), optim.SGD(0.1), epochs=2, batch_size=16,
                  progress=False, stream=stream, profile=True, wait=True)
    assert history.profile is not None
    assert stream.getvalue().count("profile of train_step") == 1
    assert str(history.profile) in stream.getvalue()


def test_machine_measures_and_caches(monkeypatch, tmp_path):
    monkeypatch.delenv("CHAINJIT_PEAK")
    monkeypatch.setenv("CHAINJIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(machine_module, "sgemm_gflops",
                        lambda n, repeat=5: {1024: 120.0, 2048: 150.0}[n])
    monkeypatch.setattr(machine_module, "copy_gbs", lambda nbytes=2**26, repeat=7:
                        20.0 if nbytes > machine_module.CACHE_BYTES else 80.0)
    found = machine_module.machine()
    assert (found.peak_gflops, found.bandwidth_gbs, found.cache_gbs) == (150.0, 20.0, 80.0)
    assert found.vector_bits in (128, 256, 512)
    assert found.seconds(3e9, 0) == pytest.approx(0.02)
    assert found.seconds(0, 10**6) == pytest.approx(10**6 / 80e9)  # in cache
    assert found.seconds(0, 10**8) == pytest.approx(10**8 / 20e9)
    machine_module.machine.cache_clear()
    monkeypatch.setattr(machine_module, "sgemm_gflops", lambda *a, **k: pytest.fail("again"))
    assert machine_module.machine() == found  # from the file


def test_machine_file_of_an_older_layout_is_measured_again(monkeypatch, tmp_path):
    """A cached machine file written before a field existed (cache_gbs) is not trusted: its
    missing rate would read as 0 GB/s."""
    monkeypatch.delenv("CHAINJIT_PEAK")
    monkeypatch.setenv("CHAINJIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(machine_module, "sgemm_gflops", lambda n, repeat=5: 100.0)
    monkeypatch.setattr(machine_module, "copy_gbs", lambda nbytes=2**26, repeat=7: 30.0)
    machine_module.machine.cache_clear()
    first = machine_module.machine()
    (path,) = tmp_path.glob("machine_*.json")
    old = {k: v for k, v in json.loads(path.read_text()).items() if k != "cache_gbs"}
    path.write_text(json.dumps(old))
    machine_module.machine.cache_clear()
    monkeypatch.setattr(machine_module, "copy_gbs", lambda nbytes=2**26, repeat=7: 40.0)
    again = machine_module.machine()
    machine_module.machine.cache_clear()
    assert first.cache_gbs == 30.0 and again.cache_gbs == 40.0  # measured, not read as 0


def test_sgemm_and_copy_rates_are_measured():
    assert machine_module.sgemm_gflops(128, repeat=2, seconds=0.01) > 0.1
    assert machine_module.copy_gbs(2**20, repeat=2) > 0.1


def test_fit_on_the_interpreter_says_why_it_has_no_profile():
    params, x, y = _mlp(batch=48)
    stream = io.StringIO()
    history = fit(_mlp_loss, params, (x, y), optim.SGD(0.1), batch_size=16, progress=False,
                  stream=stream, profile=True, backend="interpreter")
    assert "no profile" in stream.getvalue() and "interpreter" in history.profile


def test_instrument_keeps_a_loop_nodes_body_calls_with_that_node():
    source = "\n".join([
        "import numpy as np", "", "", "@numba.njit", "def driver(a, ws):", "",
        "    # c:f32[4] = scan a    # m.py:3", "    for step_0 in range(4):", "",
        "        # d:f32[4] = exp a    # m.py:4", "        d = kern_0123456789(ws, a)", "",
        "        e = kern_abcdef0123(d)", "", "    kern_fedcba9876(a)", "", "    return (a, )"])
    text, calls, nodes = instrument(source)
    assert nodes == 1
    assert [c.node for c in calls] == [0, 0, None]
    assert "        prof_t[1] += clock() - prof_c" in text  # inside the loop, every step
    builtins.compile(text, "<instrumented>", "exec")
