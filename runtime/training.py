"""Training: `train_step` (forward, backward and optimiser update as ONE compiled call) and the
`fit` loop around it (shuffled batches, progress line, evaluation, history, checkpoints).

`train_step(loss_fn, opt)` compiles `(params, opt_state, *batch) -> (loss, new_params,
new_state)`, built from `value_and_grad(loss_fn)` and `opt.update`, so autodiff, the passes
and codegen see one joint graph. The first call of a signature (tree structures,
leaf shapes and dtypes of params, state and batch) checks with NumPy first (optimiser state
against params, batch sizes, label ranges recorded by `nn.cross_entropy` while tracing); later
calls of the same signature only range-check the labels (one compiled pass) and call the
compiled step directly. Params and state are donated, updated in place by the compiled call
only if the loss is finite (`commit` copies whatever was not); on a non-finite loss the
parameters are left as they were and the batch is re-run with the reference interpreter to
name the first IR node that produced a non-finite value.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numba
import numpy as np

from compiler import nn
from compiler.api import Compiled, compile
from compiler.errors import describe_source
from compiler.pytree import tree_flatten
from ir.interpreter import eval_node
from ir.ops import Op
from runtime.linking import ensure_compiled
from runtime.optim import Optimizer
from runtime.progress import progress_bar

__all__ = ["FitError", "History", "NonFiniteLossError", "TrainStep", "fit", "train_step"]


class NonFiniteLossError(FloatingPointError):
    """The loss of a training step was NaN or infinite; the parameters were not updated."""


class FitError(RuntimeError):
    """A failure inside `fit`, with the epoch, step and batch where it happened."""


def commit(targets: Any, values: Any) -> None:
    """Write the step's results into the caller's arrays, leaf by leaf.

    The compiled step donates params and state (`donate_argnums`), so the leaves it returns
    are the caller's arrays, already updated in place: those are skipped.
    """
    for target, value in zip(tree_flatten(targets)[0], tree_flatten(values)[0]):
        if target is not value:
            np.copyto(target, value)


@numba.njit(cache=True, nogil=True)
def labels_out_of_range(labels, num_classes):
    """Whether any label is outside [0, num_classes): one compiled pass, ~1 us on a batch
    (NumPy's min and max cost several us each right after the step's driver ran)."""
    for label in labels.flat:
        if label < 0 or label >= num_classes:
            return True
    return False


def _same_leaves(tree: Any, new: Any) -> bool:
    """Whether `new`'s leaves are `tree`'s arrays themselves (donated, updated in place)."""
    leaves, new_leaves = tree_flatten(tree)[0], tree_flatten(new)[0]
    return len(leaves) == len(new_leaves) and all(a is b for a, b in zip(leaves, new_leaves))


def _batch_size_of(batch: Sequence, what: str = "batch") -> int:
    sizes = [(i, np.shape(a)[0]) for i, a in enumerate(batch) if np.ndim(a) >= 1]
    if not sizes:
        raise ValueError(f"the {what} holds no arrays with a batch axis")
    if len({n for _, n in sizes}) > 1:
        listed = ", ".join(f"argument {i}: {n}" for i, n in sizes)
        raise ValueError(
            f"mismatched batch sizes in the {what} ({listed}); inputs and labels must have "
            "the same length along axis 0")
    return sizes[0][1]


class TrainStep:
    """`loss = step(params, *batch)`: one compiled forward + backward + update; `params` are
    updated in place and the optimiser state lives in `step.state`."""

    def __init__(self, loss_fn: Callable, optimizer: Optimizer, has_aux: bool = False,
                 check_finite: bool = True, check_batch: bool = True,
                 backend: str | None = None, wait: bool | None = None,
                 data_parallel: bool = False, timeout: float | None = None):
        self.loss_fn = _uncompiled(loss_fn)
        self.optimizer = optimizer
        self.has_aux = has_aux
        self.check_finite = check_finite
        self.check_batch = check_batch
        self.state: Any = None
        self._label_slots: dict[tuple, list[tuple[int, int, str]]] = {}
        # signature key -> (label leaves to range-check, whether every leaf of params and state
        # is updated in place, the compiled step's direct call for the key or None)
        self._checked: dict[Any, tuple[list, bool, Callable | None]] = {}
        # data_parallel: gradients averaged over every rank's shard inside the compiled call
        # (runtime/data_parallel.py); None, or the first-call checks and the watchdog
        self.parallel = None
        if data_parallel:
            from runtime.data_parallel import DataParallel

            self.parallel = DataParallel(self, timeout)
            if self.parallel.active:
                wait = True  # the interpreter rounds differently: every rank runs compiled

        def train_step_fn(params, opt_state, *batch):
            from compiler.transforms import value_and_grad

            if data_parallel:  # averaged over every rank's shard: runtime/data_parallel.py
                from runtime.data_parallel import value_and_mean_grad

                value, grads = value_and_mean_grad(self.loss_fn, has_aux, params, batch)
            else:
                value, grads = value_and_grad(self.loss_fn, has_aux=has_aux)(params, *batch)
            new_params, new_state = optimizer.update(grads, opt_state, params)
            return value, new_params, new_state

        train_step_fn.__name__ = f"train_step_{getattr(self.loss_fn, '__name__', 'loss')}"
        # params and state are updated in place by the compiled call (only when the loss,
        # output leaf 0, is finite if check_finite: else they are left as they were)
        # a new step's first calls run on the interpreter while it compiles, unless `wait`
        # (or CHAINJIT_WAIT=1): runtime/background.py
        self.compiled = compile(train_step_fn, backend=backend, donate_argnums=(0, 1),
                                donate_guard=0 if check_finite else None, wait=wait)

    @property
    def signatures(self) -> int:
        """How many input signatures have been traced (each costs a compile)."""
        return len(self.compiled._traces)

    def ir(self, params, *batch, stage: str = "traced") -> str:
        """The whole step's IR at a stage ("traced", "joint", "optimized", "fused")."""
        return self.compiled.ir(params, self._state_for(params), *batch, stage=stage)

    def profile(self, params, *batch, seconds: float = 0.5):
        """The step's time per kernel against the machine's roofline (`Compiled.profile`);
        `params` and the state are not updated."""
        return self.compiled.profile(params, self._state_for(params), *batch, seconds=seconds)

    def _state_for(self, params):
        if self.state is None:
            self.state = self.optimizer.init(params)
        return self.state

    def check(self, params, batch: Sequence) -> None:
        """The checks NumPy can make before the compiled call (each a clear error)."""
        self.optimizer.check(params, self._state_for(params))
        if self.check_batch and len(batch) > 1:
            _batch_size_of(batch)
        batch_leaves = tree_flatten(batch)[0]
        for index, classes, path in self._find_labels(params, batch):
            nn.check_labels(batch_leaves[index], classes, f"labels {path}")

    def _find_labels(self, params, batch) -> list[tuple[int, int, str]]:
        """(batch leaf index, number of classes, path) of each input cross_entropy used as
        labels, found once per batch signature from the traced graph."""
        batch_leaves = tree_flatten(batch)[0]
        key = tuple((np.shape(x), np.asarray(x).dtype.str) for x in batch_leaves)
        if key not in self._label_slots:
            traced = self.compiled.trace(params, self.state, *batch)
            first = len(traced.graph.inputs) - len(batch_leaves)
            self._label_slots[key] = [(i - first, classes, path)
                                      for i, classes, path in traced.labels if i >= first]
        return self._label_slots[key]

    def __call__(self, params, *batch):
        args = (params, self._state_for(params), *batch)
        # The steady state: a signature (tree structure, leaf shapes, strides, dtypes of
        # params, state and batch) that already passed every check: only the label ranges
        # are looked at, and the compiled step is called directly.
        key, leaves = self.compiled._fast_key(args)
        known = self._checked.get(key) if key is not None else None
        if known is None:
            return self._checked_call(key, params, batch, args)
        labels, in_place, call = known
        for index, classes, path in labels:
            if labels_out_of_range(leaves[index], classes):
                nn.check_labels(leaves[index], classes, f"labels {path}")  # raises
        parallel = self.parallel
        if parallel is not None and parallel.active:
            parallel.arm()  # the watchdog: a rank that never reaches the all_reduce
            try:
                value, new_params, new_state = call(leaves) if call else self.compiled(*args)
            finally:
                parallel.disarm()
        else:
            value, new_params, new_state = call(leaves) if call else self.compiled(*args)
        self._finish(value, params, batch, new_params, new_state, in_place)
        return value

    def _checked_call(self, key, params, batch: Sequence, args: tuple):
        """The first call of a signature: every check, then the call; the signature is
        remembered (with where its labels are and whether the compiled step updates every
        leaf of params and state in place) once a call with a finite loss went through."""
        self.check(params, batch)
        parallel = self.parallel
        if parallel is not None and parallel.active:
            parallel.first_call(params, batch, args)  # same step everywhere, rank 0's params
            parallel.arm()
            try:
                value, new_params, new_state = self.compiled(*args)
            finally:
                parallel.disarm()
        else:
            value, new_params, new_state = self.compiled(*args)
        in_place = _same_leaves(params, new_params) and _same_leaves(self.state, new_state)
        self._finish(value, params, batch, new_params, new_state, in_place)
        if key is not None and not self.compiled.building(*args):  # checked each call while
            self._remember(key, params, batch, args, in_place)  # the interpreter serves it
        return value

    def _finish(self, value, params, batch: Sequence, new_params, new_state,
                in_place: bool) -> None:
        """NonFiniteLossError (naming the first IR node gone non-finite) for a NaN/inf loss,
        whose params and state the compiled call's guard has left as they were; else the new
        values are committed, unless the compiled call already wrote them in place."""
        loss = value[0] if self.has_aux else value
        if self.check_finite and not math.isfinite(loss):
            raise NonFiniteLossError(self.diagnose(params, *batch, loss=loss))
        if not in_place:
            commit(params, new_params)
            commit(self.state, new_state)

    def _remember(self, key, params, batch: Sequence, args: tuple, in_place: bool) -> None:
        batch_leaves = tree_flatten(batch)[0]
        first = len(tree_flatten(args)[0]) - len(batch_leaves)
        labels = []
        for index, classes, path in self._find_labels(params, batch):
            leaf = batch_leaves[index]
            if type(leaf) is not np.ndarray or leaf.dtype.kind not in "iu":
                return  # checked the slow way on every call
            ensure_compiled(labels_out_of_range, (leaf, classes))  # the fast load from disk
            labels.append((first + index, classes, path))
        self._checked[key] = (labels, in_place, self.compiled.unchecked_entry(key))

    def diagnose(self, params, *batch, loss=None) -> str:
        """Re-run the step with the interpreter, node by node, and describe the first node
        that made a non-finite value out of finite inputs."""
        args = (params, self.state, *batch)
        graph = self.compiled.trace(*args).graph
        leaves = self.compiled.signature(args)[1]
        env = {var: np.asarray(leaf, var.dtype) for var, leaf in zip(graph.inputs, leaves)}
        head = f"the loss is {loss} (not finite); the parameters were not updated"
        for node in graph.nodes:
            outs = eval_node(node, [env[v] for v in node.inputs])
            env.update(zip(node.outputs, outs))
            if node.op is Op.CONSTANT or not any(_has_nonfinite(o) for o in outs):
                continue
            if all(not _has_nonfinite(env[v]) for v in node.inputs):
                note = f" ({node.note})" if node.note else ""
                types = ", ".join(str(v.type) for v in node.inputs)
                return (f"{head}.\n  first non-finite value: op {node.op.value}{note} on "
                        f"{types}\n  at {describe_source(node.source)}")
        return f"{head}; re-running the batch with the interpreter gave finite values only"


def _has_nonfinite(value: np.ndarray) -> bool:
    return value.dtype.kind == "f" and not np.all(np.isfinite(value))


def train_step(loss_fn: Callable, optimizer: Optimizer, has_aux: bool = False,
               **options) -> TrainStep:
    """Compile `loss_fn(params, *batch)`'s gradient step with `optimizer` into one call.

    `step(params, *batch)` updates `params` in place and returns the loss (with `has_aux`,
    `(loss, aux)`); the optimiser state is `step.state`.
    """
    return TrainStep(loss_fn, optimizer, has_aux, **options)


# -- the fit loop -----------------------------------------------------------------------------


class History(dict):
    """Per-epoch lists: "loss", "epoch_time", "samples_per_sec", "eval_<metric>" (and
    "train_<aux key>" with has_aux). `history.step` is the TrainStep that was used and
    `history.eval_fn` the compiled evaluation (None without eval_data)."""

    step: TrainStep
    eval_fn: Compiled | None

    def plot(self, keys: Sequence[str] | None = None, path: str | None = None):
        """Loss and metrics per epoch, drawn with matplotlib (runtime/plots.py)."""
        from runtime.plots import plot_history

        return plot_history(self, keys, path)


def _as_tuple(data) -> tuple:
    return tuple(data) if isinstance(data, (tuple, list)) else (data,)


def _uncompiled(fn: Callable) -> Callable:
    return fn.fn if isinstance(fn, Compiled) else fn


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
    (runtime/progress.py). With `profile`, the step's kernel profile (`TrainStep.profile`)
    is printed to `stream` (stderr) once, after its third compiled step (`history.profile`
    holds it). Returns a History (`History.plot()` draws it).

    With `data_parallel=True` (launched by mpiexec: runtime/data_parallel.py) every rank
    shuffles alike and trains on its own slice of each batch of `batch_size` (the global
    batch); the loss in the history is the global batch's, evaluation metrics are means over
    every rank's slice of `eval_data`, and only rank 0 draws progress and saves checkpoints.
    """
    from runtime import checkpoint as ckpt

    data = _as_tuple(data)
    n = _batch_size_of(data, "training data")
    batch_size = min(batch_size, n)
    batches = n // batch_size
    step = step or train_step(loss_fn, optimizer, has_aux, backend=backend, wait=wait,
                              data_parallel=data_parallel, timeout=timeout)
    from runtime.data_parallel import Shard

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
