"""NumPy's dispatch on tracers: the merged tables of compiler/numpy_api.py and the
compiler/numpy_*.py modules, and the two protocol handlers `ArrayTracer` forwards to
(`__array_ufunc__`, `__array_function__`; compiler/array_tracer.py).

Each NumPy module keeps its own three tables, grouped by concern (`UFUNCS`: ufunc ->
implementation, `FUNCTIONS`: NumPy function -> implementation, `TRACER_METHODS`: ndarray method
name -> implementation); this is the one place that merges them, once, when it is imported.
A later module's entry wins. An unsupported NumPy function raises an error naming it and its
supported neighbours.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from compiler import (
    numpy_api,
    numpy_creation,
    numpy_linalg,
    numpy_math,
    numpy_reduce,
    numpy_shape,
)
from compiler import primitives as F
from compiler.errors import UnsupportedError
from compiler.numpy_api import UFUNC_REDUCTIONS, _no_out

MODULES = (numpy_api, numpy_math, numpy_reduce, numpy_shape, numpy_linalg, numpy_creation)

UFUNCS = {k: v for module in MODULES for k, v in getattr(module, "UFUNCS", {}).items()}
FUNCTIONS = {k: v for module in MODULES for k, v in getattr(module, "FUNCTIONS", {}).items()}
TRACER_METHODS = {k: v for module in MODULES
                  for k, v in getattr(module, "TRACER_METHODS", {}).items()}


def _not_supported(name: str, known: Sequence[str]) -> UnsupportedError:
    close = difflib.get_close_matches(name, known, n=4, cutoff=0.5)
    hint = f"close supported functions: {', '.join(close)}. " if close else ""
    return UnsupportedError(
        f"np.{name} is not supported on traced values",
        fix=f"{hint}Compose it from supported operations, or compute it outside the compiled "
        "function (see compiler/numpy_dispatch.py for where the full list is kept)",
    )


def array_ufunc(self, ufunc, method, *inputs, out=None, **kwargs):
    _no_out(out, f"np.{ufunc.__name__}")
    dtype = kwargs.pop("dtype", None)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if kwargs.get("where", True) is not True:
        raise UnsupportedError(f"np.{ufunc.__name__}(..., where=...)",
                               fix="use np.where(mask, np.{ufunc.__name__}(...), fill)")
    kwargs.pop("where", None)
    if method == "__call__" and ufunc in UFUNCS:
        if kwargs.pop("casting", "same_kind") and kwargs:
            raise UnsupportedError(f"np.{ufunc.__name__} with arguments {sorted(kwargs)}")
        result = UFUNCS[ufunc](*inputs)
        return F.astype(result, dtype) if dtype is not None else result
    if method == "reduce" and ufunc in UFUNC_REDUCTIONS:
        axis = kwargs.pop("axis", 0)
        keepdims = kwargs.pop("keepdims", False)
        return UFUNC_REDUCTIONS[ufunc](inputs[0], axis=axis, keepdims=keepdims)
    name = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
    return _raise(_not_supported(name, [u.__name__ for u in UFUNCS]))


def array_function(self, func, types, args, kwargs):
    if func in FUNCTIONS:
        return FUNCTIONS[func](*args, **kwargs)
    return _raise(_not_supported(func.__name__, [f.__name__ for f in FUNCTIONS]))


def _raise(error: Exception):
    raise error
