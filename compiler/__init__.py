"""chainjit's compiler: tracing, the frontend, autodiff, passes and codegen, and the public API.

>>> import numpy as np
>>> from compiler import compile
>>> @compile
... def f(x):
...     return np.sum(np.tanh(x) * 2.0)
>>> float(f(np.zeros(3, np.float32)))
0.0
"""

from compiler import tracing as _tracing

_tracing._install_methods()

from compiler.api import compile  # noqa: E402
from compiler.collectives import all_reduce  # noqa: E402
from compiler.frontend import stop_gradient  # noqa: E402
from compiler.pytree import tree_flatten, tree_map, tree_unflatten  # noqa: E402
from compiler.transforms import custom_vjp, grad, value_and_grad, vjp  # noqa: E402

__all__ = ["all_reduce", "compile", "custom_vjp", "grad", "stop_gradient", "tree_flatten",
           "tree_map", "tree_unflatten", "value_and_grad", "vjp"]
