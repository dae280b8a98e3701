"""`train_step`: forward, backward and optimiser update as ONE compiled call (the `fit` loop
around it is runtime/training/loop.py).

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
from collections.abc import Callable, Sequence
from typing import Any

import numba
import numpy as np

from compiler import nn
from compiler.api import Compiled, compile
from compiler.errors import describe_source
from compiler.pytree import tree_flatten
from ir.interpreter import eval_node
from ir.ops import Op
from runtime.execution.linking import ensure_compiled
from runtime.training.optim import Optimizer

__all__ = ["FitError", "NonFiniteLossError", "TrainStep", "train_step"]


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
        # (runtime/training/data_parallel.py); None, or the first-call checks and the watchdog
        self.parallel = None
        if data_parallel:
            from runtime.training.data_parallel import DataParallel

            self.parallel = DataParallel(self, timeout)
            if self.parallel.active:
                wait = True  # the interpreter rounds differently: every rank runs compiled

        def train_step_fn(params, opt_state, *batch):
            from compiler.transforms import value_and_grad

            if data_parallel:  # averaged over every rank's shard: runtime/training/data_parallel.py
                from runtime.training.data_parallel import value_and_mean_grad

                value, grads = value_and_mean_grad(self.loss_fn, has_aux, params, batch)
            else:
                value, grads = value_and_grad(self.loss_fn, has_aux=has_aux)(params, *batch)
            new_params, new_state = optimizer.update(grads, opt_state, params)
            return value, new_params, new_state

        train_step_fn.__name__ = f"train_step_{getattr(self.loss_fn, '__name__', 'loss')}"
        # params and state are updated in place by the compiled call (only when the loss,
        # output leaf 0, is finite if check_finite: else they are left as they were)
        # a new step's first calls run on the interpreter while it compiles, unless `wait`
        # (or CHAINJIT_WAIT=1): runtime/execution/background.py
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


def _uncompiled(fn: Callable) -> Callable:
    return fn.fn if isinstance(fn, Compiled) else fn


def _has_nonfinite(value: np.ndarray) -> bool:
    return value.dtype.kind == "f" and not np.all(np.isfinite(value))


def train_step(loss_fn: Callable, optimizer: Optimizer, has_aux: bool = False,
               **options) -> TrainStep:
    """Compile `loss_fn(params, *batch)`'s gradient step with `optimizer` into one call.

    `step(params, *batch)` updates `params` in place and returns the loss (with `has_aux`,
    `(loss, aux)`); the optimiser state is `step.state`.
    """
    return TrainStep(loss_fn, optimizer, has_aux, **options)
