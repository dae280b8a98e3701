"""`c_view(x, offset, shape)`: a C-contiguous array over `x`'s memory, in generated code.

Generated code cuts work buffers out of one workspace array and reads contiguous arrays
through flat (merged-axis) views. `x[a:b].reshape(shape)` did both, and Numba compiles its
general reshape (a copy-or-view routine) as a subroutine in every kernel that calls it: the
first one in a process took 0.3-0.5 s, and every kernel paid again for the slice and the
checks. `c_view` builds the array record directly: the data pointer `offset` elements into
`x`, the shape given, C strides, `x`'s memory owner (so the view keeps it alive). It checks
what the reshape checked, that the view lies inside `x` (ValueError otherwise).

`x` must be C-contiguous (codegen passes workspaces and C arrays only; a non-C `x` does not
type-check). The view is registered as an alias of `x` for Numba's parallel passes (without
it, a prange loop writing only through the view was removed as dead code), and it runs as
plain Python too (a driver run without Numba, as tests do).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import cgutils, ir_utils, types
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array


@intrinsic
def c_view(typingctx, x, offset, shape):
    """A C array of `shape` over `x`'s elements from `offset` on."""
    if not (isinstance(x, types.Array) and x.layout == "C"):
        return None
    if not isinstance(offset, types.Integer):
        return None
    if isinstance(shape, types.Integer):
        ndim = 1
    elif isinstance(shape, types.BaseTuple) and all(isinstance(t, types.Integer) for t in shape):
        ndim = len(shape)
    else:
        return None
    result = types.Array(x.dtype, ndim, "C", readonly=not x.mutable)

    def codegen(context, builder, sig, args):
        source_type, _, shape_type = sig.args
        source = make_array(source_type)(context, builder, value=args[0])
        intp = context.get_value_type(types.intp)
        start = context.cast(builder, args[1], sig.args[1], types.intp)
        if isinstance(shape_type, types.Integer):
            dims = [context.cast(builder, args[2], shape_type, types.intp)]
        else:
            dims = [context.cast(builder, builder.extract_value(args[2], k), t, types.intp)
                    for k, t in enumerate(shape_type)]
        count = ir.Constant(intp, 1)
        for dim in dims:
            count = builder.mul(count, dim)
        inside = builder.and_(
            builder.icmp_signed(">=", start, ir.Constant(intp, 0)),
            builder.icmp_signed("<=", builder.add(start, count), source.nitems))
        with builder.if_then(builder.not_(inside), likely=False):
            context.call_conv.return_user_exc(
                builder, ValueError, ("chainjit: a view outside its buffer (internal error)",))
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(
            context.get_data_type(source_type.dtype)))
        strides, stride = [], itemsize
        for dim in reversed(dims):
            strides.insert(0, stride)
            stride = builder.mul(stride, dim)
        view = make_array(sig.return_type)(context, builder)
        populate_array(view, data=cgutils.gep_inbounds(builder, source.data, start),
                       shape=dims, strides=strides, itemsize=itemsize,
                       meminfo=source.meminfo, parent=source.parent)
        out = view._getvalue()
        context.nrt.incref(builder, sig.return_type, out)  # a new reference to x's memory
        return out

    return result(x, offset, shape), codegen


def _python_c_view(x, offset, shape):
    shape = (shape,) if np.ndim(shape) == 0 else tuple(shape)
    size = int(np.prod(shape, dtype=np.int64))
    if not 0 <= offset <= x.size - size:
        raise ValueError("chainjit: a view outside its buffer (internal error)")
    return x.reshape(-1)[offset:offset + size].reshape(shape)


class _PythonCallable(type(c_view)):
    def __call__(self, *args):
        return _python_c_view(*args)


c_view.__class__ = _PythonCallable
c_view.__module__ = __name__


def _alias_of_source(lhs, args, alias_map, arg_aliases):
    ir_utils._add_alias(lhs, args[0].name, alias_map, arg_aliases)


ir_utils.alias_func_extensions[("c_view", __name__)] = _alias_of_source
