"""Data-parallel training over MPI: real `mpiexec -n 2` and `-n 4` jobs on localhost (each
rank runs tests/runtime/mpi_worker.py), every one bounded by a subprocess timeout; and the
one-process behaviour (no launcher: one rank, mpi4py never imported)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from compiler import all_reduce, compile, grad, nn
from compiler.collectives import all_reduce_parts
from compiler.errors import ShapeMismatchError, TraceError
from runtime import distributed, optim, train_step
from runtime.training.data_parallel import shard_bounds
from tests.runtime import mpi_worker

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
needs_mpi = pytest.mark.skipif(not MPIEXEC.exists(), reason="the .[mpi] extra is not installed")


def mpiexec(ranks: int, *args: str, timeout: float = 60, env: dict | None = None):
    """Run the worker on `ranks` local ranks; (return code, output, seconds)."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in distributed.LAUNCHER_VARIABLES and k != "CHAINJIT_MPI"}
    environment.update({"PYTHONPATH": str(ROOT), "CHAINJIT_WAIT": "1", **(env or {})})
    start = time.perf_counter()
    done = subprocess.run([str(MPIEXEC), "-n", str(ranks), sys.executable, "-m",
                           "tests.runtime.mpi_worker", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - start


def rank_results(out: Path, stem: str, ranks: int) -> list[dict]:
    return [dict(np.load(out / f"{stem}-rank{r}.npz")) for r in range(ranks)]


# -- real jobs -------------------------------------------------------------------------------


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 4])
def test_ranks_match_one_process_with_the_whole_batch(ranks, tmp_path):
    # batch 8 splits evenly on 2 and 4 ranks, 9 does not (5+4, 3+2+2+2)
    cases = [("sgd", 8), ("adam", 9)]
    code, output, _ = mpiexec(ranks, "equivalence", str(tmp_path),
                              *[f"{opt}:{batch}" for opt, batch in cases], timeout=120)
    assert code == 0, output
    for opt, batch in cases:
        results = rank_results(tmp_path, f"{opt}-{batch}-{ranks}", ranks)
        want = mpi_worker.reference(opt, batch)
        for name, value in want.items():
            for r, got in enumerate(results):  # every rank bit-identical to rank 0
                assert got[name].tobytes() == results[0][name].tobytes(), (opt, name, r)
            np.testing.assert_allclose(results[0][name], value, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{opt} batch {batch}: {name}")
        for got in results:  # the loss every rank returns is the global batch's
            np.testing.assert_array_equal(got["losses"], results[0]["losses"])


@needs_mpi
def test_all_reduce_across_two_ranks(tmp_path):
    code, output, _ = mpiexec(2, "collectives", str(tmp_path))
    assert code == 0, output
    x0 = np.arange(6, dtype=np.float32).reshape(2, 3)
    x1 = x0 + 1
    for got in rank_results(tmp_path, "collectives-2", 2):
        np.testing.assert_array_equal(got["sum"], x0 + x1)
        np.testing.assert_array_equal(got["eager_sum"], x0 + x1)
        np.testing.assert_array_equal(got["mean"], (x0 + x1) / 2)
        np.testing.assert_array_equal(got["max"], x1)
        np.testing.assert_array_equal(got["min"], x0)
        np.testing.assert_array_equal(got["parts_sum"], (x0 + x1) * 2)
        np.testing.assert_array_equal(got["parts_count"], 2.0)
        # a constant operand is copied, not reduced in place: the same on every call
        np.testing.assert_array_equal(got["constant_call_2"], np.arange(3.0) * 2)
        np.testing.assert_array_equal(got["x_after"], x0 + 2 * (got["rank"] == 1))
        # d/dx_r of Σ_ranks sum(mean(x)²) = mean over ranks of 2 mean(x) = x0 + x1
        np.testing.assert_allclose(got["grad_mean"], x0 + x1, rtol=1e-6)
    keys = [int(got["key"]) for got in rank_results(tmp_path, "collectives-2", 2)]
    assert keys == [10, 11]  # distributed.rank_key: distinct dropout keys on every rank


@needs_mpi
def test_fit_on_two_ranks_matches_one_process(tmp_path):
    code, output, _ = mpiexec(2, "fit", str(tmp_path), timeout=120)
    assert code == 0, output
    # the progress bar on rank 0 only: one end-of-epoch summary (tqdm or the text bar)
    ends = [line for line in output.splitlines() if "epoch 2/2" in line and "eval loss" in line]
    assert len(ends) == 1, output
    results = rank_results(tmp_path, "fit-2", 2)
    assert list(tmp_path.glob("fit-2.ckpt*")), list(tmp_path.iterdir())  # saved by rank 0
    params = mpi_worker.init(100)
    x, y = mpi_worker.data(40)
    from runtime import fit

    history = fit(mpi_worker.loss, params, (x, y), optim.Adam(0.05), epochs=2, batch_size=10,
                  eval_data=mpi_worker.data(12, seed=2), progress=False)
    for got in results:
        for name, value in params.items():
            assert got[name].tobytes() == results[0][name].tobytes(), name
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(got["loss"], history["loss"], rtol=1e-5)
        np.testing.assert_allclose(got["eval_loss"], history["eval_loss"], rtol=1e-5)


@needs_mpi
def test_a_rank_that_raises_ends_the_job_within_seconds(tmp_path):
    code, output, seconds = mpiexec(2, "fails", str(tmp_path), "raise", timeout=60)
    assert code != 0
    assert "rank 1 fails at step 3 on purpose" in output
    assert "uncaught RuntimeError: ending all 2 ranks (MPI_Abort)" in output
    assert "rank 0 finished" not in output
    assert seconds < 10 + 5, seconds  # + the ranks' start-up and first compile


@needs_mpi
def test_a_rank_that_skips_the_collective_ends_the_job_after_the_timeout(tmp_path):
    code, output, seconds = mpiexec(2, "fails", str(tmp_path), "skip", timeout=60,
                                    env={"CHAINJIT_MPI_TIMEOUT": "2"})
    assert code != 0
    assert "call 4 of the data-parallel train step waited more than 2 s" in output, output
    assert "a rank did not reach this collective" in output
    assert seconds < 2 + 10, seconds  # far below the skipping rank's 60 s sleep


@needs_mpi
def test_ranks_with_different_models_fail_with_a_clear_error(tmp_path):
    code, output, seconds = mpiexec(2, "fails", str(tmp_path), "mismatch", timeout=60)
    assert code != 0
    assert "ranks [1] traced a different training step from rank 0" in output, output
    assert "rank 0: { lambda a:f32[4]" in output and "rank 1: { lambda a:f32[5]" in output
    assert seconds < 15, seconds


# -- one process -----------------------------------------------------------------------------


def test_one_rank_without_a_launcher_never_imports_mpi4py():
    script = ("import sys, numpy as np\n"
              "from compiler import all_reduce, compile\n"
              "from runtime import distributed\n"
              "f = compile(lambda x: all_reduce(x, 'sum') * 2.0)\n"
              "assert f(np.ones(3, np.float32)).tolist() == [2.0, 2.0, 2.0]\n"
              "assert (distributed.size(), distributed.rank(), distributed.is_root()) == "
              "(1, 0, True)\n"
              "distributed.barrier()\n"
              "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'\n"
              "print('ok')\n")
    environment = {k: v for k, v in os.environ.items()
                   if k not in distributed.LAUNCHER_VARIABLES and k != "CHAINJIT_MPI"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_all_reduce_in_one_process_is_the_identity_compiled_and_eager():
    x = np.arange(12, dtype=np.float32).reshape(3, 4) - 5
    for op in ("sum", "mean", "max", "min"):
        f = compile(lambda v, op=op: all_reduce(v * 2.0, op) + 1.0)
        np.testing.assert_array_equal(f(x), x * 2 + 1)
        np.testing.assert_array_equal(all_reduce(x, op), x)
    parts = compile(lambda a, b, c: all_reduce_parts([a * 1.0, b, c]))
    a, b = np.ones((2, 2)), np.arange(3.0)
    got = parts(a, b, 7.0)
    np.testing.assert_array_equal(got[0], a)
    np.testing.assert_array_equal(got[1], b)
    assert got[2] == 7.0
    returned = compile(lambda v: all_reduce(v))  # the result of an input: a copy, kept
    first = returned(x)
    returned(x + 10)
    np.testing.assert_array_equal(first, x)
    assert not np.shares_memory(first, x)
    ints = compile(lambda v: all_reduce(v, "max"))
    np.testing.assert_array_equal(ints(np.arange(4)), np.arange(4))


def test_all_reduce_compiled_matches_the_interpreter():
    def fn(x, y):
        a, b = all_reduce_parts([x * x - 1.0, y * 3.0], "mean")  # in place on the concatenation
        c = all_reduce(x, "max") + x  # a copy: x is read again after it
        return a * 2.0 + b[:2].sum(), c, all_reduce(np.sum(y))

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    want = compile(fn, backend="interpreter")(x, y)
    for got, expected in zip(compile(fn)(x, y), want):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(want[1], 2 * x)
    assert "all_reduce[reduction=mean shapes=((2,3),(4,))]" in compile(fn).ir(x, y)


def test_all_reduce_errors_name_the_op_and_the_fix():
    x = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="all_reduce op must be one of sum, mean, max, min"):
        compile(lambda v: all_reduce(v, "prod"))(x)
    with pytest.raises(ShapeMismatchError, match="all_reduce mean needs a float operand, got "
                       "i64") as error:
        compile(lambda v: all_reduce(v, "mean"))(np.arange(3))
    assert "test_data_parallel.py" in str(error.value) and "astype(np.float32)" in str(error.value)
    with pytest.raises(TraceError, match="has no gradient") as error:
        compile(grad(lambda v: np.sum(all_reduce(v, "max"))))(x)
    assert "stop_gradient" in str(error.value)
    with pytest.raises(TraceError, match="a buffer of several parts"):
        compile(grad(lambda v: np.sum(all_reduce_parts([v, v * 2.0])[1])))(x)


def test_data_parallel_step_in_one_process_equals_the_plain_step():
    x, y = mpi_worker.data(8)
    plain, parallel = mpi_worker.init(3), mpi_worker.init(3)
    step = train_step(mpi_worker.loss, optim.Adam(0.05))
    step_dp = train_step(mpi_worker.loss, optim.Adam(0.05), data_parallel=True)
    for _ in range(3):
        want, got = step(plain, x, y), step_dp(parallel, x, y)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    for name in plain:
        np.testing.assert_allclose(parallel[name], plain[name], rtol=1e-5, atol=1e-7)
    assert "all_reduce" in step_dp.ir(parallel, x, y)


def test_data_parallel_step_averages_by_the_global_count():
    # in one process the "global" batch is the shard: a loss that is a sum over the batch
    # gets the mean gradient n * g / n = g, the loss reported is the shard's mean loss
    def loss(p, x, y):
        return nn.cross_entropy(x @ p["w"], y)

    x, y = mpi_worker.data(6)
    params = {"w": np.full((mpi_worker.FEATURES, mpi_worker.CLASSES), 0.1, np.float32)}
    want_params = {"w": params["w"].copy()}
    g = compile(grad(loss))(want_params, x, y)["w"]
    step = train_step(loss, optim.SGD(0.5), data_parallel=True)
    value = step(params, x, y)
    np.testing.assert_allclose(value, compile(loss)(want_params, x, y), rtol=1e-6)
    np.testing.assert_allclose(params["w"], want_params["w"] - 0.5 * g, rtol=1e-6)


def test_data_parallel_step_with_aux_and_mixed_dtypes():
    # float32 and float64 parameters: one buffer each; the aux output stays the shard's own
    def loss(p, x, y):
        logits = x @ p["w"] + p["b"].astype(np.float32)
        value = nn.cross_entropy(logits, y)
        return value, {"scale": np.sum(p["b"])}

    x, y = mpi_worker.data(6)
    make = lambda: {"w": np.full((mpi_worker.FEATURES, mpi_worker.CLASSES), 0.1, np.float32),
                    "b": np.array([0.1, -0.2, 0.3])}
    plain, parallel = make(), make()
    step = train_step(loss, optim.SGD(0.5), has_aux=True)
    step_dp = train_step(loss, optim.SGD(0.5), has_aux=True, data_parallel=True)
    for _ in range(2):
        (want, want_aux), (got, got_aux) = step(plain, x, y), step_dp(parallel, x, y)
        np.testing.assert_allclose(got, want, rtol=1e-6)
        np.testing.assert_allclose(got_aux["scale"], want_aux["scale"], rtol=1e-6)  # via f32
    assert parallel["b"].dtype == np.float64
    for name in plain:
        np.testing.assert_allclose(parallel[name], plain[name], rtol=1e-5, atol=1e-7)
    assert step_dp.ir(parallel, x, y).count("all_reduce[") == 2  # one buffer per dtype


def test_shard_bounds_split_as_array_split():
    for count in (7, 8, 9, 10):
        for ranks in (1, 2, 3, 4):
            bounds = [shard_bounds(count, ranks, r) for r in range(ranks)]
            want = [len(s) for s in np.array_split(np.arange(count), ranks)]
            assert [hi - lo for lo, hi in bounds] == want
            assert bounds[0][0] == 0 and bounds[-1][1] == count
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


@needs_mpi
@pytest.mark.slow
def test_mlp_digits_example_trains_on_two_ranks():
    environment = {k: v for k, v in os.environ.items()
                   if k not in distributed.LAUNCHER_VARIABLES and k != "CHAINJIT_MPI"}
    environment.update({"PYTHONPATH": str(ROOT), "CHAINJIT_WAIT": "1"})
    done = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, "examples/mlp_digits.py",
                           "--data-parallel", "--quick"], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("test accuracy") == 1  # printed by rank 0 only
    assert "2 ranks (data parallel)" in done.stdout
