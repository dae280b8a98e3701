"""chainjit's compiler: tracing, the primitives and NumPy on tracers, autodiff, passes and
codegen, and the public API.

>>> import numpy as np
>>> from compiler import compile
>>> @compile
... def f(x):
...     return np.sum(np.tanh(x) * 2.0)
>>> float(f(np.zeros(3, np.float32)))
0.0
"""

from compiler.api import compile
from compiler.collectives import all_reduce
from compiler.loops import fori_loop, scan, while_loop
from compiler.primitives import stop_gradient
from compiler.pytree import tree_flatten, tree_map, tree_unflatten
from compiler.transforms import custom_vjp, grad, value_and_grad, vjp

__all__ = ["all_reduce", "compile", "custom_vjp", "fori_loop", "grad", "scan", "stop_gradient",
           "tree_flatten", "tree_map", "tree_unflatten", "value_and_grad", "vjp", "while_loop"]
