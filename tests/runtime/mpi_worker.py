"""One rank of the MPI tests (tests/runtime/test_data_parallel.py launches it with mpiexec):
`python -m tests.runtime.mpi_worker SCENARIO OUT_DIR [ARGS...]`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from compiler import all_reduce, compile, grad, nn
from compiler.collectives import all_reduce_parts
from runtime import distributed, fit, optim, train_step
from runtime.training.data_parallel import shard_bounds

FEATURES, HIDDEN, CLASSES = 5, 4, 3


def loss(params, x, y):
    h = np.tanh(x @ params["w1"] + params["b1"])
    return nn.cross_entropy(h @ params["w2"] + params["b2"], y)


def init(seed: int, hidden: int = HIDDEN) -> dict:
    rng = np.random.default_rng(seed)
    return {"w1": rng.normal(0, 0.5, (FEATURES, hidden)).astype(np.float32),
            "b1": np.zeros(hidden, np.float32),
            "w2": rng.normal(0, 0.5, (hidden, CLASSES)).astype(np.float32),
            "b2": np.zeros(CLASSES, np.float32)}


def data(batch: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, FEATURES)).astype(np.float32),
            rng.integers(0, CLASSES, batch))


OPTIMIZERS = {"sgd": lambda: optim.SGD(0.1, momentum=0.9), "adam": lambda: optim.Adam(0.05)}
STEPS = 4


def reference(optimizer: str, batch: int) -> dict:
    """One process, the whole batch: what every rank must end with (rank 0's init)."""
    params = init(100)
    step = train_step(loss, OPTIMIZERS[optimizer]())
    x, y = data(batch)
    for _ in range(STEPS):
        step(params, x, y)
    return params


def equivalence(out: Path, *cases: str) -> None:
    """Each case `optimizer:batch`: STEPS data-parallel steps, each rank on its shard."""
    rank, size = distributed.rank(), distributed.size()
    for case in cases:
        optimizer, batch = case.split(":")
        params = init(100 + rank)  # different on every rank: the first call sends rank 0's
        step = train_step(loss, OPTIMIZERS[optimizer](), data_parallel=True)
        x, y = data(int(batch))
        lo, hi = shard_bounds(int(batch), size, rank)
        losses = [float(step(params, x[lo:hi], y[lo:hi])) for _ in range(STEPS)]
        np.savez(out / f"{optimizer}-{batch}-{size}-rank{rank}.npz", losses=losses, **params)


def collectives(out: Path) -> None:
    rank, size = distributed.rank(), distributed.size()
    x = np.arange(6, dtype=np.float32).reshape(2, 3) + rank
    results = {op: compile(lambda v, op=op: all_reduce(v, op))(x) for op in
               ("sum", "mean", "max", "min")}
    results["eager_sum"] = all_reduce(x)
    parts = compile(lambda v: all_reduce_parts([v * 2.0, np.float32(1.0)]))(x)
    results["parts_sum"], results["parts_count"] = parts
    constant = compile(lambda v: all_reduce(np.arange(3.0)) + v)
    constant(np.zeros(3))
    results["constant_call_2"] = constant(np.zeros(3))
    results["rank"] = np.array(rank)
    results["key"] = np.array(distributed.rank_key(5))
    results["x_after"] = x + rank  # the input is untouched by every call above (x0 + 2 rank)
    results["grad_mean"] = compile(grad(lambda v: np.sum(all_reduce(v, "mean") ** 2)))(x)
    np.savez(out / f"collectives-{size}-rank{rank}.npz", **results)


def fails(out: Path, how: str) -> None:
    rank = distributed.rank()
    params = init(100, HIDDEN + (rank if how == "mismatch" else 0))
    step = train_step(loss, optim.SGD(0.1), data_parallel=True)
    x, y = data(8)
    for k in range(6):
        if rank == 1 and k == 3:
            if how == "raise":
                raise RuntimeError("rank 1 fails at step 3 on purpose")
            if how == "skip":
                time.sleep(60)  # never reaches step 3's all_reduce
        step(params, x, y)
    print(f"rank {rank} finished", flush=True)


def fit_run(out: Path) -> None:
    rank, size = distributed.rank(), distributed.size()
    params = init(100)
    x, y = data(40)
    history = fit(loss, params, (x, y), optim.Adam(0.05), epochs=2, batch_size=10,
                  eval_data=data(12, seed=2), progress=rank == 0, data_parallel=True,
                  checkpoint=str(out / f"fit-{size}.ckpt"))
    np.savez(out / f"fit-{size}-rank{rank}.npz", loss=history["loss"],
             eval_loss=history["eval_loss"], **params)


if __name__ == "__main__":
    scenario, out, *args = sys.argv[1:]
    {"equivalence": equivalence, "collectives": collectives, "fails": fails,
     "fit": fit_run}[scenario](Path(out), *args)
