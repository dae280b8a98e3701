"""Cotangents as autodiff accumulates them: shared by the reverse sweep (compiler/autodiff.py)
and the backward of loops (compiler/loops_vjp.py), which the sweep calls."""

from __future__ import annotations

import numpy as np

from compiler import primitives as F
from compiler.errors import TraceError
from compiler.tracing import Trace, Tracer
from ir.graph import Role, Source, Var
from ir.ops import Op


class AutodiffError(TraceError, ValueError):
    """A gradient that cannot be taken as asked (non-scalar output, integer argument, ...)."""


def zeros(trace: Trace, var: Var) -> Tracer:
    """A symbolic zero made concrete: a 0-d zero broadcast to `var`'s shape."""
    return F.broadcast_to(F.wrap(trace, trace.constant(np.zeros((), var.dtype))), var.shape)


def accumulate(trace: Trace, cts: dict[Var, Var], var: Var, ct: Var,
                source: Source | None) -> None:
    if ct.dtype != var.dtype:
        (ct,) = trace.emit(Op.CAST, (ct,), {"dtype": var.dtype})
    if ct.shape != var.shape:
        raise AssertionError(f"VJP rule produced {ct.type} for a value of type {var.type}")
    if var not in cts:
        cts[var] = ct
        return
    with trace.annotate(f"vjp accumulate d%{var.id}", source, Role.BACKWARD):
        cts[var] = F.add(F.wrap(trace, cts[var]), F.wrap(trace, ct)).ir_var
