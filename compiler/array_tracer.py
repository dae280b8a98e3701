"""The tracer users hold: `ArrayTracer`, a `Tracer` with NumPy's array interface.

Python's operators, the ndarray methods (`x.sum()`, `x.reshape(...)`, `x.T`, `x & y`) and
NumPy's two dispatch protocols route to the primitives and the NumPy layer. The class sits
above both, so they import it nowhere: they make tracers through their trace (`Trace.wrap`),
and a trace made by `new_trace()` makes ArrayTracers. Its methods are one table, `METHODS`.
"""

from __future__ import annotations

from compiler import numpy_api as N
from compiler import numpy_dispatch
from compiler import primitives as F
from compiler.tracing import Trace, Tracer


def _swapped(fn):
    return lambda self, other: fn(other, self)


_BINARY = {"add": F.add, "sub": F.subtract, "mul": F.multiply, "truediv": F.divide,
           "pow": F.power, "matmul": N.matmul}
_COMPARISONS = {"lt": F.less, "le": F.less_equal, "gt": F.greater, "ge": F.greater_equal,
                "eq": F.equal, "ne": F.not_equal}

# method name -> function of the tracer (and the other operand): Python's operators, NumPy's
# protocols, then the ndarray methods of the NumPy layer (compiler/numpy_dispatch.py), whose
# entries win (its `__floordiv__` is NumPy's floor division).
METHODS = {
    **{f"__{name}__": fn for name, fn in _BINARY.items()},
    **{f"__r{name}__": _swapped(fn) for name, fn in _BINARY.items()},
    **{f"__{name}__": fn for name, fn in _COMPARISONS.items()},
    "__hash__": Tracer.__hash__,  # a class defining __eq__ would otherwise lose it
    "__neg__": F.negative,
    "__pos__": lambda self: self,
    "__abs__": F.absolute,
    "__floordiv__": N.floor_divide,
    "__getitem__": N.getitem,
    "__array_ufunc__": numpy_dispatch.array_ufunc,
    "__array_function__": numpy_dispatch.array_function,
    "T": property(N.transpose),
    "mT": property(lambda self: N.swapaxes(self, -1, -2)),
    **numpy_dispatch.TRACER_METHODS,
}

ArrayTracer = type("ArrayTracer", (Tracer,), {
    "__doc__": "A traced array: operators and methods as on an ndarray, recorded into its "
               "trace (the table `METHODS`).",
    "__module__": __name__,
    "__qualname__": "ArrayTracer",
    "__slots__": (),
    **METHODS,
})


def new_trace() -> Trace:
    """A trace whose values are ArrayTracers (what compile and the transformations record)."""
    return Trace(ArrayTracer)
