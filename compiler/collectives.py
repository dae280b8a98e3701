"""Collectives across the ranks of a data-parallel job: `all_reduce`, traced as the
ALL_REDUCE primitive (ir/ops.py), or run eagerly on NumPy arrays.

ALL_REDUCE takes any number of operands of one dtype and gives one 1-d buffer: the operands
raveled, concatenated and reduced across ranks, so a training step sums every gradient with
one MPI_Allreduce of one flat buffer (runtime/data_parallel.py). The interpreter's rule here
calls mpi4py (runtime/distributed.py); the compiled one calls MPI_Allreduce from the
generated code (compiler/kernels/mpi.py). In one process the reduction is the identity.

>>> import numpy as np
>>> from compiler import all_reduce, compile
>>> compile(lambda x: all_reduce(x * 2.0, op="mean"))(np.ones(3, np.float32))
array([2., 2., 2.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compiler import frontend as F
from ir.interpreter import EVAL_RULES
from ir.ops import Op
from ir.shapes import ALL_REDUCE_OPS

__all__ = ["all_reduce", "all_reduce_flat"]


def _all_reduce_across_ranks(*xs, op):
    """The interpreter's (and eager NumPy's) ALL_REDUCE: mpi4py's in-place Allreduce."""
    from runtime import distributed

    buffer = np.concatenate([np.ravel(x) for x in xs])  # a fresh array, reduced in place
    return distributed.world().allreduce(buffer, op)


EVAL_RULES[Op.ALL_REDUCE] = _all_reduce_across_ranks


def all_reduce(x, op: str = "sum"):
    """`x` reduced elementwise across every rank of the job ("sum", "mean", "max", "min"):
    every rank gets the same result. Differentiable for sum and mean (the cotangents are
    reduced the same way); in one process it returns `x`.

    Every rank must call it, in the same order, with the same shape.
    """
    _check_op(op)
    shape = F.shape_of(x)
    return F.reshape(all_reduce_flat([x], op), shape)


def all_reduce_flat(xs: Sequence, op: str = "sum"):
    """`xs` raveled, concatenated and reduced across ranks as ONE buffer (1-d)."""
    _check_op(op)
    dtype = F.result_dtype(*xs)
    return F.apply(Op.ALL_REDUCE, [F.astype(x, dtype) for x in xs], {"op": op})


def _check_op(op: str) -> None:
    if op not in ALL_REDUCE_OPS:
        raise ValueError(f"all_reduce op must be one of {', '.join(ALL_REDUCE_OPS)}; got {op!r}")
