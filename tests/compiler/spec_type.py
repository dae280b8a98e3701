"""The record of one traceable operation under test (tests/compiler/op_specs.py's table)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class OpSpec:
    name: str
    fn: Callable
    shapes: tuple[tuple[int, ...], ...]
    domain: str = "real"  # "real", "positive", "unit" (-1, 1)
    broadcasts: bool = False
    int_inputs: tuple[int, ...] = ()  # positions taking integer arrays (indices)
    grad: bool = True  # differentiable: its VJP is checked against central differences
    second_order: bool = True  # smooth enough for grad of grad to be checked too
    tol: float = 1e-5  # float32 forward tolerance (float64: 1e-12, or tol64)
    tol64: float = 1e-12
