"""The NumPy functions of compiler/numpy_*.py, added to compiler/numpy_api.py's dispatch
tables (`UFUNCS`, `FUNCTIONS`, `TRACER_METHODS`) when numpy_api is imported: each module
keeps its own three tables, grouped by concern, and this is the one place that merges them."""

from __future__ import annotations

from compiler import numpy_creation, numpy_linalg, numpy_math, numpy_reduce, numpy_shape

MODULES = (numpy_math, numpy_reduce, numpy_shape, numpy_linalg, numpy_creation)


def register(ufuncs: dict, functions: dict, methods: dict) -> None:
    for module in MODULES:
        ufuncs.update(getattr(module, "UFUNCS", {}))
        functions.update(getattr(module, "FUNCTIONS", {}))
        methods.update(getattr(module, "TRACER_METHODS", {}))
