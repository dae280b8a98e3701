"""Collectives across the ranks of a data-parallel job: `all_reduce`, traced as the
ALL_REDUCE primitive (ir/ops.py), or run eagerly on NumPy arrays.

ALL_REDUCE[reduction, shapes] reduces its one operand across ranks and gives it back cut into parts
of `shapes` (one part, x's own shape, for `all_reduce(x)`). `all_reduce_parts` packs many
values into one buffer (a concatenation) and reduces it with ONE MPI_Allreduce, so a
training step sums all its gradients at once (runtime/training/data_parallel.py); its parts are
views of that buffer in the compiled code, not copies. The interpreter's rule here calls
mpi4py (runtime/execution/distributed.py); the compiled one calls MPI_Allreduce from the generated
code (compiler/kernels/mpi.py). In one process the reduction is the identity.

>>> import numpy as np
>>> from compiler import all_reduce, compile
>>> compile(lambda x: all_reduce(x * 2.0, op="mean"))(np.ones(3, np.float32))
array([2., 2., 2.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compiler import primitives as F
from ir.interpreter import EVAL_RULES, cut
from ir.ops import Op
from ir.shapes import ALL_REDUCE_OPS

__all__ = ["all_reduce", "all_reduce_parts"]


def _all_reduce_across_ranks(x, *, reduction, shapes):
    """The interpreter's (and eager NumPy's) ALL_REDUCE: mpi4py's in-place Allreduce."""
    from runtime.execution import distributed

    buffer = np.array(x).ravel()  # a fresh C-contiguous copy, reduced in place
    return cut(distributed.world().allreduce(buffer, reduction), shapes)


EVAL_RULES[Op.ALL_REDUCE] = _all_reduce_across_ranks


def all_reduce(x, op: str = "sum"):
    """`x` reduced elementwise across every rank of the job ("sum", "mean", "max", "min"):
    every rank gets the same result. Differentiable for sum and mean (the cotangents are
    reduced the same way); in one process it returns `x`.

    Every rank must call it, in the same order, with the same shape.
    """
    (out,) = _emit(x, op, (F.shape_of(x),))
    return out


def all_reduce_parts(xs: Sequence, op: str = "sum") -> list:
    """Each of `xs` reduced across ranks, all in ONE buffer and one MPI_Allreduce (not
    differentiable: `all_reduce` each value that needs a gradient)."""
    dtype = F.result_dtype(*xs)
    flat = [F.reshape(F.astype(x, dtype), (int(np.prod(F.shape_of(x))),)) for x in xs]
    buffer = flat[0] if len(flat) == 1 else F.concatenate(flat)
    return _emit(buffer, op, tuple(F.shape_of(x) for x in xs))


def _emit(x, op: str, shapes: tuple) -> list:
    if op not in ALL_REDUCE_OPS:
        raise ValueError(f"all_reduce op must be one of {', '.join(ALL_REDUCE_OPS)}; got {op!r}")
    params = {"reduction": op, "shapes": tuple(tuple(s) for s in shapes)}
    trace = F.trace_of([x])
    if trace is None:
        return list(EVAL_RULES[Op.ALL_REDUCE](np.asarray(x), **params))
    outs = trace.emit(Op.ALL_REDUCE, [F.to_var(trace, x)], params)
    return [F.wrap(trace, v) for v in outs]
