"""Data-parallel training over MPI: what `train_step(..., data_parallel=True)` and
`fit(..., data_parallel=True)` add to a step (runtime/training/step.py).

Each rank passes its own shard of the batch. Inside the one compiled call, the step computes
its shard's `n * loss` and `n * gradients` (n, the shard's sample count, seeds the backward:
one scalar multiply), packs them and `n` into ONE flat buffer, sums it across ranks with one
in-place MPI_Allreduce (`all_reduce_parts`: compiler/kernels/mpi.py) and divides by the
global count, so every rank applies the same update: the mean over the global batch, right
for uneven shards too. (The loss is taken to be a mean over its batch, as `nn.cross_entropy`
and `nn.mse` are; one buffer per dtype when parameters mix float32 and float64.)

The first call of a signature, before anything is compiled or reduced:
  1. every rank traces the step at rank 0's shard size and hashes its graph and signature;
     different hashes (another model, optimiser, hyper-parameter or parameter shape on some
     rank) raise `DistributedError` on every rank, naming the first line that differs;
  2. the first call of the step broadcasts parameters and optimiser state from rank 0, so
     ranks started from different random parameters continue identically;
  3. the step is built (each rank compiles or loads it), then the ranks meet at a barrier
     with a generous timeout (compile times differ between ranks), and only then does the
     step run under the watchdog's timeout (runtime/execution/distributed.py).

The steady state makes no call to mpi4py: the watchdog is armed and disarmed around the
compiled call (two attribute writes).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from runtime.execution import distributed
from runtime.execution.distributed import DistributedError

FIRST_CALL_TIMEOUT = 600.0  # the barrier after building: ranks may compile for minutes


def batch_count(batch: Sequence) -> int:
    """The shard's number of examples: axis 0 of its first array with one."""
    from compiler.primitives import shape_of
    from compiler.pytree import tree_flatten

    for leaf in tree_flatten(list(batch))[0]:
        shape = shape_of(leaf)
        if shape:
            return shape[0]
    raise ValueError("a data-parallel step needs a batch holding an array with a batch axis")


def value_and_mean_grad(loss_fn, has_aux: bool, params: Any, batch: Sequence):
    """(the global batch's mean loss, its mean gradients), traced, from this rank's shard."""
    from compiler.transforms import value_and_grad

    count = batch_count(batch)

    def weighted(p, *b):  # n x loss: the backward's seed is n, so the gradients come out
        out = loss_fn(p, *b)  # multiplied by n at the cost of one scalar multiply
        return (out[0] * float(count), out[1]) if has_aux else out * float(count)

    value, grads = value_and_grad(weighted, has_aux=has_aux)(params, *batch)
    return average_gradients(value, grads, count, has_aux)


def average_gradients(value: Any, grads: Any, count: int, has_aux: bool) -> tuple[Any, Any]:
    """(global mean loss, global mean gradients) from this rank's `count` x (loss, gradients)
    of its `count` examples, traced: one all_reduce of one flat buffer per dtype."""
    from compiler.collectives import all_reduce_parts
    from compiler.primitives import astype, result_dtype
    from compiler.pytree import tree_flatten, tree_unflatten

    loss = value[0] if has_aux else value
    leaves, tree = tree_flatten(grads)
    dtypes = []
    for leaf in leaves:
        dtype = result_dtype(leaf)
        if dtype.kind == "f" and dtype not in dtypes:
            dtypes.append(dtype)
    if not dtypes:
        dtypes.append(result_dtype(loss))
    new_leaves = list(leaves)
    total = global_loss = None
    for k, dtype in enumerate(dtypes):
        slots = [i for i, leaf in enumerate(leaves) if result_dtype(leaf) == dtype]
        parts = [leaves[i] for i in slots]
        if k == 0:  # the loss and the count ride with the first dtype's gradients
            parts += [astype(loss, dtype), np.asarray(count, dtype)]
        reduced = all_reduce_parts(parts, "sum")
        if k == 0:
            total = reduced[-1]  # the global sample count
            global_loss = astype(reduced[-2] / total, result_dtype(loss))
        scale = total if k == 0 else astype(total, dtype)
        for i, part in zip(slots, reduced):
            new_leaves[i] = part / scale
    value = (global_loss, value[1]) if has_aux else global_loss
    return value, tree_unflatten(tree, new_leaves)


class DataParallel:
    """A TrainStep's data-parallel state: the first-call checks and the watchdog."""

    def __init__(self, step, timeout: float | None = None):
        self.step = step
        self.world = distributed.world()
        self.watchdog = self.world.watchdog
        if timeout is not None:
            self.watchdog.timeout = float(timeout)
        self.synced = False  # parameters and state broadcast from rank 0 yet
        self.checked: set = set()  # signatures every rank agreed on
        self.calls = 0

    @property
    def active(self) -> bool:
        return self.world.size > 1

    def first_call(self, params, batch: Sequence, args: tuple) -> None:
        """Steps 1-3 of the module doc, before a signature's first compiled call."""
        compiled = self.step.compiled
        key = compiled.signature(args)[0]
        if key not in self.checked:
            self.check_same_step(params, batch)
            self.checked.add(key)
        if not self.synced:
            from compiler.pytree import tree_flatten

            leaves = tree_flatten((params, self.step.state))[0]
            self.world.broadcast([a for a in leaves if isinstance(a, np.ndarray)])
            self.synced = True
        self.build(args)
        self.world.barrier("the barrier after building the data-parallel step",
                           max(FIRST_CALL_TIMEOUT, self.watchdog.timeout))

    def build(self, args: tuple) -> None:
        """Compile the step. Ranks on one host sharing a cache folder let their first rank
        compile while they wait, then load its code from the disk cache: N ranks compiling
        the same step at once on one host's cores would take about N times as long."""
        from runtime.execution.cache import cache_dir

        host = self.world.host()
        limit = max(FIRST_CALL_TIMEOUT, self.watchdog.timeout)
        folders = host.allgather(str(cache_dir()), "the ranks' cache folders on this host")
        staged = host.size > 1 and len(set(folders)) == 1
        if staged and host.rank > 0:
            host.barrier("waiting for this host's first rank to compile the step", limit)
        self.step.compiled.precompile(*args)
        if staged and host.rank == 0:
            host.barrier("releasing this host's ranks to load the compiled step", limit)

    def check_same_step(self, params, batch: Sequence) -> None:
        """Every rank traced the same step (hash of signature and graph), or a clear error."""
        count = batch_count(batch)
        counts = self.world.allgather(count, "the check that every rank traced the same step")
        if min(counts) <= 0:
            raise DistributedError(f"every rank needs at least one example in its shard; the "
                                   f"shard sizes are {counts}")
        text = self._step_text(params, batch, counts[0])
        digest = hashlib.sha256(text.encode()).hexdigest()
        digests = self.world.allgather(digest, "the check that every rank traced the same step")
        if len(set(digests)) == 1:
            return
        texts = self.world.allgather(text, "the comparison of the ranks' steps")
        bad = [r for r, d in enumerate(digests) if d != digests[0]]
        raise DistributedError(
            f"ranks {bad} traced a different training step from rank 0 (shard sizes "
            f"{counts}); every rank must run the same model, optimiser and parameter shapes "
            "(only the shard's batch size may differ). The first difference: "
            f"{_first_difference(texts[0], texts[bad[0]], bad[0])}")

    def _step_text(self, params, batch: Sequence, count: int) -> str:
        """The step's traced graph at `count` examples, without source lines."""
        from compiler.pytree import tree_flatten, tree_unflatten
        from ir.printer import format_graph

        leaves, tree = tree_flatten(list(batch))
        shaped = [np.zeros((count, *np.shape(a)[1:]), np.asarray(a).dtype)
                  if np.ndim(a) >= 1 else a for a in leaves]
        compiled = self.step.compiled
        args = (params, self.step.state, *tree_unflatten(tree, shaped))
        key = compiled.signature(args)[0]
        known = key in compiled._traces
        try:
            graph = compiled.trace(*args).graph
        finally:
            if not known and count != batch_count(batch):
                compiled._traces.pop(key, None)  # a trace only for the hash, never run
        lines = [line.split("  #")[0].rstrip() for line in format_graph(graph).splitlines()]
        return "\n".join(lines)

    def arm(self) -> None:
        self.calls += 1
        self.watchdog.what = f"call {self.calls} of the data-parallel train step"
        self.watchdog.limit = self.watchdog.timeout
        self.watchdog.start()
        self.watchdog.since = time.monotonic()

    def disarm(self) -> None:
        self.watchdog.since = None


def _first_difference(a: str, b: str, rank: int) -> str:
    for number, (x, y) in enumerate(zip(a.splitlines(), b.splitlines()), 1):
        if x != y:
            return f"line {number} of the traced step is\n  rank 0: {x.strip()}\n  rank " \
                   f"{rank}: {y.strip()}"
    return "one graph is longer than the other"


class Shard:
    """`fit`'s view of one rank's share: rows [lo, hi) of every batch, a slice of the
    evaluation data, metrics reduced across ranks. One rank: the whole batch, no reduction."""

    def __init__(self, batch_size: int, data_parallel: bool):
        world = distributed.world() if data_parallel else None
        self.ranks = world.size if world is not None else 1
        self.root = world is None or world.rank == 0
        if batch_size < self.ranks:
            raise ValueError(f"batch_size {batch_size} is smaller than the {self.ranks} ranks: "
                             "every rank needs at least one example of each batch")
        rank = world.rank if world is not None else 0
        self.lo, self.hi = shard_bounds(batch_size, self.ranks, rank)
        self.size = self.hi - self.lo
        self.batch_size, self.rank = batch_size, rank
        self.eval_count = 0

    def rows(self, order: np.ndarray, batches: int) -> np.ndarray:
        """This rank's examples of an epoch in `order`, batch after batch."""
        used = order[: batches * self.batch_size]
        if self.ranks == 1:
            return used
        return used.reshape(batches, self.batch_size)[:, self.lo : self.hi].reshape(-1)

    def of_eval(self, eval_data: tuple, count: int) -> tuple:
        """This rank's slice of the evaluation data (all of it when it has fewer examples
        than there are ranks: then every rank evaluates everything, nothing is reduced)."""
        if self.ranks == 1 or count < self.ranks:
            return eval_data
        lo, hi = shard_bounds(count, self.ranks, self.rank)
        self.eval_count = hi - lo
        return tuple(np.asarray(a)[lo:hi] for a in eval_data)

    def after_checkpoint(self, saved: bool) -> None:
        """The other ranks wait while rank 0 saves a checkpoint, at a barrier that allows
        FIRST_CALL_TIMEOUT, not in the next step's all_reduce under the step's timeout."""
        if saved and self.ranks > 1:
            distributed.world().barrier("waiting for rank 0 to save the checkpoint",
                                        FIRST_CALL_TIMEOUT)

    def reduce(self, values: dict) -> dict:
        return reduce_metrics(values, self.eval_count) if self.eval_count else values


def shard_bounds(count: int, ranks: int, rank: int) -> tuple[int, int]:
    """[lo, hi) of `rank`'s share of `count` examples (np.array_split's split)."""
    base, extra = divmod(count, ranks)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def reduce_metrics(values: dict[str, float], count: int) -> dict[str, float]:
    """Per-rank means of `count` examples each -> the means over every rank's examples."""
    world = distributed.world()
    if world.size == 1:
        return values
    names = sorted(values)
    buffer = np.array([float(values[n]) * count for n in names] + [float(count)], np.float64)
    world.allreduce(buffer, "sum")
    return {n: buffer[i] / buffer[-1] for i, n in enumerate(names)}
