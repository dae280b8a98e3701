"""`x[index]` under tracing: basic slicing, None/Ellipsis, integers and integer arrays.

Basic indexing becomes SLICE (+ RESHAPE to drop integer-indexed axes and add new ones).
Integer-array indexing becomes one GATHER: several index arrays on consecutive axes are
combined into one flat index over those axes (x[rows, cols] gathers from x reshaped to
(rows*cols, ...)), which is NumPy's result for the common cases.
"""

from __future__ import annotations

import numpy as np

from compiler import frontend as F
from compiler.errors import UnsupportedError
from compiler.tracing import Tracer


def _is_int_array(index) -> bool:
    if isinstance(index, Tracer):
        return index.dtype.kind in "iu"
    if isinstance(index, (list, np.ndarray)):
        return np.asarray(index).dtype.kind in "iu"
    return False


def getitem(x, index):
    if not isinstance(x, Tracer):
        return x[index]
    index = index if isinstance(index, tuple) else (index,)
    index = tuple(_normalize_bool_mask(i) for i in index)
    if sum(i is Ellipsis for i in index) > 1:
        raise UnsupportedError("an index can only have a single ellipsis ('...')")
    consumed = sum(1 for i in index if i is not None and i is not Ellipsis)
    if consumed > x.ndim:
        raise UnsupportedError(f"too many indices ({consumed}) for {x.ir_var.type}")
    if Ellipsis in [i for i in index if not isinstance(i, (Tracer, np.ndarray, list))]:
        at = next(k for k, i in enumerate(index) if i is Ellipsis)
        index = index[:at] + (slice(None),) * (x.ndim - consumed) + index[at + 1 :]
    else:
        index = index + (slice(None),) * (x.ndim - consumed)

    arrays = [k for k, i in enumerate(index) if _is_int_array(i)]
    if arrays:
        return _advanced(x, index, arrays)
    return _basic(x, index)


def _normalize_bool_mask(index):
    if isinstance(index, Tracer) and index.dtype == np.bool_:
        raise UnsupportedError(
            "boolean-mask indexing with a traced mask has a data-dependent shape",
            fix="use np.where(mask, x, 0) to zero out elements, or multiply by the mask",
        )
    if isinstance(index, (np.ndarray, list)) and np.asarray(index).dtype == np.bool_:
        return np.nonzero(np.asarray(index))[0]  # a constant mask is a constant index array
    return index


def _basic(x, index):
    starts, stops, steps, out_shape = [], [], [], []
    axis = 0
    for item in index:
        if item is None:
            out_shape.append(1)
            continue
        dim = x.shape[axis]
        if isinstance(item, slice):
            start, stop, step = item.indices(dim)
            if step < 0:
                raise UnsupportedError(
                    "slices with a negative step are not supported",
                    fix="use np.flip-free formulations, or index with a constant integer array",
                )
            stop = max(stop, start)
            starts.append(start), stops.append(stop), steps.append(step)
            out_shape.append(len(range(start, stop, step)))
        else:
            try:
                k = int(item)
            except TypeError:
                raise UnsupportedError(f"unsupported index {item!r}") from None
            if not -dim <= k < dim:
                raise IndexError(f"index {k} is out of bounds for axis {axis} with size {dim}")
            k %= dim
            starts.append(k), stops.append(k + 1), steps.append(1)
        axis += 1
    result = F.slice_(x, starts, stops, steps)
    return F.reshape(result, out_shape)


def _advanced(x, index, arrays):
    if arrays != list(range(arrays[0], arrays[-1] + 1)):
        raise UnsupportedError(
            "integer-array indices must be on consecutive axes",
            fix="index one axis at a time, or transpose the indexed axes next to each other",
        )
    if any(i is None for i in index):
        raise UnsupportedError("mixing None (np.newaxis) with integer-array indices")
    first, last = arrays[0], arrays[-1] + 1
    # Slices outside the array-indexed axes first (basic indexing keeps those axes).
    pre = tuple(i if k not in arrays else slice(None) for k, i in enumerate(index))
    x = _basic(x, pre)
    idx = [i if isinstance(i, Tracer) else np.asarray(i) for i in index[first:last]]
    dims = x.shape[first:last]
    shape = F.broadcast_shapes(*idx, what="index arrays")
    flat = None
    for array, dim in zip(idx, dims):
        array = F.where(F.less(array, 0), F.add(array, dim), array)  # negative indices wrap
        flat = array if flat is None else F.add(F.multiply(flat, dim), array)
    flat = F.broadcast_to(F.astype(flat, np.int64), shape)
    x = F.reshape(x, x.shape[:first] + (int(np.prod(dims)),) + x.shape[last:])
    if not isinstance(flat, Tracer):
        flat = np.ascontiguousarray(flat)
    return F.gather(x, flat, first)
