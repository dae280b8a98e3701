"""`fit`: the training loop around `train_step` (runtime/training/step.py): shuffled batches,
progress bar, evaluation in one compiled call, the per-epoch History, checkpoints.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from compiler.api import Compiled, compile
from runtime.training.optim import Optimizer
from runtime.training.progress import progress_bar
from runtime.training.step import (
    FitError,
    NonFiniteLossError,
    TrainStep,
    _batch_size_of,
    _uncompiled,
    commit,
    train_step,
)


class History(dict):
    """Per-epoch lists: "loss", "epoch_time", "samples_per_sec", "eval_<metric>" (and
    "train_<aux key>" with has_aux). `history.step` is the TrainStep that was used and
    `history.eval_fn` the compiled evaluation (None without eval_data)."""

    step: TrainStep
    eval_fn: Compiled | None

    def plot(self, keys: Sequence[str] | None = None, path: str | None = None):
        """Loss and metrics per epoch, drawn with matplotlib (runtime/training/plots.py)."""
        from runtime.training.plots import plot_history

        return plot_history(self, keys, path)


def _as_tuple(data) -> tuple:
    return tuple(data) if isinstance(data, (tuple, list)) else (data,)


def _first(value):
    return value[0] if isinstance(value, tuple) else value  # a has_aux loss: (value, aux)


def compile_metrics(metrics: Mapping[str, Callable], backend: str | None = None,
                    wait: bool | None = True) -> Compiled:
    """All metrics `name -> fn(params, *data)` as ONE compiled function returning a dict, so
    evaluation costs one compile and one call."""
    fns = {name: _uncompiled(fn) for name, fn in metrics.items()}

    def evaluate_metrics(params, *data):
        return {name: _first(fn(params, *data)) for name, fn in fns.items()}

    return compile(evaluate_metrics, backend=backend, wait=wait)


def _profile(step: TrainStep, params, batch: Sequence):
    """The step's profile, or why there is none (a string) when it does not run compiled."""
    if step.compiled.backend != "numba":
        return f"chainjit: no profile: the step runs on the {step.compiled.backend} backend"
    return step.profile(params, *batch)


def fit(loss_fn: Callable, params: Any, data: Any, optimizer: Optimizer, epochs: int = 1,
        batch_size: int = 32, *, seed: int = 0, eval_data: Any = None,
        metrics: Mapping[str, Callable] | None = None, progress: bool | dict = True,
        has_aux: bool = False, shuffle: bool = True, step: TrainStep | None = None,
        state: Any = None,
        checkpoint: str | None = None, stream=None, backend: str | None = None,
        wait: bool | None = None, data_parallel: bool = False,
        timeout: float | None = None, profile: bool = False) -> History:
    """Train `params` in place on `data` = (inputs, labels, ...) arrays sharing axis 0.

    Each epoch shuffles (unless `shuffle=False`) with a generator seeded by `seed` and runs
    `len(data) // batch_size` full batches: the last partial batch is DROPPED (a different one
    each epoch, so every example is used), which keeps one batch shape and so one compiled
    signature. Metrics `name -> fn(params, *eval_data)` and the loss run on the whole
    `eval_data` in one compiled call (one signature: no partial batches there either).
    `step`/`state` continue an earlier run (a TrainStep, or an optimiser state from
    `checkpoint.load`); `checkpoint` is a path saved after every epoch. `backend` and `wait`
    are passed to `compile`: by default the first steps (and the first evaluation) run on the
    reference interpreter while their code compiles in the background. `progress`: a tqdm bar
    per epoch (True; a text bar without tqdm), none (False), or a dict of tqdm options
    (runtime/training/progress.py). With `profile`, the step's kernel profile (`TrainStep.profile`)
    is printed to `stream` (stderr) once, after its third compiled step (`history.profile`
    holds it). Returns a History (`History.plot()` draws it).

    With `data_parallel=True` (launched by mpiexec: runtime/training/data_parallel.py) every rank
    shuffles alike and trains on its own slice of each batch of `batch_size` (the global
    batch); the loss in the history is the global batch's, evaluation metrics are means over
    every rank's slice of `eval_data`, and only rank 0 draws progress and saves checkpoints.
    """
    from runtime.training import checkpoint as ckpt

    data = _as_tuple(data)
    n = _batch_size_of(data, "training data")
    batch_size = min(batch_size, n)
    batches = n // batch_size
    step = step or train_step(loss_fn, optimizer, has_aux, backend=backend, wait=wait,
                              data_parallel=data_parallel, timeout=timeout)
    from runtime.training.data_parallel import Shard

    if data_parallel and step.parallel is None:
        raise ValueError("fit(..., data_parallel=True) was given a step made without "
                         "data_parallel=True; pass train_step(..., data_parallel=True) or none")
    if profile and data_parallel:
        raise ValueError("fit(profile=True) times a step by running it for a while, which ranks "
                         "of a data-parallel job would do a different number of times; profile "
                         "the step in one process (without data_parallel)")
    shard = Shard(batch_size, data_parallel)  # this rank's rows [lo, hi) of every batch
    has_checkpoint = bool(checkpoint)
    progress = progress if shard.root else False
    checkpoint = checkpoint if shard.root else None
    if state is not None:
        step.state = step.optimizer.init(params)
        commit(step.state, state)
    eval_fn = None
    if eval_data is not None:
        eval_data = _as_tuple(eval_data)
        eval_data = shard.of_eval(eval_data, _batch_size_of(eval_data, "evaluation data"))
        eval_fn = compile_metrics({"loss": loss_fn, **(metrics or {})}, backend, wait)
        eval_fn.precompile(params, *eval_data)  # its build starts now, not after epoch 1
    history = History(loss=[], epoch_time=[], samples_per_sec=[])
    history.step = step
    history.profile = None
    history.eval_fn = eval_fn
    rng = np.random.default_rng(seed)
    bar = progress_bar(progress, epochs, batches, stream)
    local = shard.size
    # Each epoch gathers its shuffled examples once into these arrays (one np.take per array,
    # no allocation); a step's batch is then a contiguous slice of them, not a fancy index.
    gather = shuffle or shard.ranks > 1
    epoch_data = tuple(np.empty((batches * local, *np.shape(a)[1:]), np.asarray(a).dtype)
                       for a in data) if gather else tuple(np.asarray(a) for a in data)
    for epoch in range(epochs):
        order = rng.permutation(n) if shuffle else np.arange(n)
        if gather and (shuffle or epoch == 0):
            for a, out in zip(data, epoch_data):
                np.take(a, shard.rows(order, batches), axis=0, out=out)
        start = time.perf_counter()
        total, aux_totals = 0.0, {}
        for b in range(batches):
            batch = tuple(a[b * local : (b + 1) * local] for a in epoch_data)
            try:
                value = step(params, *batch)
            except NonFiniteLossError as error:
                examples = order[b * batch_size + shard.lo :][:4].tolist()
                raise FitError(f"training stopped at epoch {epoch + 1}, step "
                               f"{epoch * batches + b + 1} (batch index {b} of the epoch, "
                               f"examples {examples}...): {error}") from error
            if profile and history.profile is None and epoch * batches + b >= 2 and \
                    not step.compiled.building(params, step.state, *batch):
                began = time.perf_counter()
                history.profile = _profile(step, params, batch)
                print(history.profile, file=stream or sys.stderr)
                start += time.perf_counter() - began  # not the epoch's time
            loss = value[0] if has_aux else value
            total += float(loss)
            if has_aux and isinstance(value[1], dict):
                for key, v in value[1].items():
                    aux_totals[key] = aux_totals.get(key, 0.0) + float(v)
            if bar.enabled:
                rate = (b + 1) * batch_size / max(time.perf_counter() - start, 1e-9)
                bar.update(epoch, b + 1, total / (b + 1), rate, force=b + 1 == batches)
        elapsed = time.perf_counter() - start
        history["loss"].append(total / batches)
        history["epoch_time"].append(elapsed)
        history["samples_per_sec"].append(batches * batch_size / elapsed)
        for key, v in aux_totals.items():
            history.setdefault(f"train_{key}", []).append(v / batches)
        summary = f"{elapsed:.2f}s"
        if eval_fn is not None:
            for name, v in shard.reduce(eval_fn(params, *eval_data)).items():
                history.setdefault(f"eval_{name}", []).append(float(v))
                summary += f"  eval {name} {v:.4f}"
        bar.end_epoch(summary)
        if checkpoint:
            ckpt.save(checkpoint, params, step.state)
        shard.after_checkpoint(has_checkpoint)
    return history
