"""`x[index]` under tracing, with NumPy's semantics: basic slicing (any step, negative too),
None/Ellipsis, integers, integer and constant boolean arrays, and mixes of them.

Basic indexing becomes one SLICE (positive steps) and a RESHAPE that drops integer-indexed
axes and adds new ones; a negative step is the positive-step slice of the same elements
followed by a GATHER with a reversed `arange` on that axis.

Advanced indexing (any integer or bool array in the index; integers beside arrays count as
0-d index arrays, as in NumPy) becomes one GATHER: the array-indexed axes are moved next to
each other, merged into one axis, and gathered with the flat index (rows * cols + col for
x[rows, cols]). As in NumPy, the broadcast index shape replaces the indexed axes where they
stand when they are adjacent in the index, and comes first when a slice, None or Ellipsis
separates them (x[3, 2:, [1, 3]] has shape (2, n - 2)).
"""

from __future__ import annotations

import numpy as np

from compiler import primitives as F
from compiler.errors import UnsupportedError
from compiler.tracing import Tracer


def _is_int_array(index) -> bool:
    if isinstance(index, Tracer):
        return index.dtype.kind in "iu"
    if isinstance(index, (list, np.ndarray)):
        return np.asarray(index).dtype.kind in "iu"
    return False


def _is_array(index) -> bool:
    return isinstance(index, (Tracer, list, np.ndarray))


def getitem(x, index):
    if not isinstance(x, Tracer):
        return x[index]
    index = index if isinstance(index, tuple) else (index,)
    index = _expand_bool_masks(index)
    if sum(i is Ellipsis for i in index if not _is_array(i)) > 1:
        raise UnsupportedError("an index can only have a single ellipsis ('...')")
    consumed = sum(1 for i in index if i is not None and not (i is Ellipsis and not _is_array(i)))
    if consumed > x.ndim:
        raise IndexError(f"too many indices for array: {x.ir_var.type} is {x.ndim}-dimensional, "
                         f"but {consumed} were indexed")
    at = next((k for k, i in enumerate(index) if not _is_array(i) and i is Ellipsis), None)
    fill = (slice(None),) * (x.ndim - consumed)
    index = index[:at] + fill + index[at + 1 :] if at is not None else index + fill

    for item in index:
        if _is_array(item) and not _is_int_array(item) and np.size(item):
            raise IndexError(f"arrays used as indices must be of integer (or boolean) type, "
                             f"got {getattr(item, 'dtype', type(item).__name__)}")
    advanced = [k for k, i in enumerate(index) if _is_array(i)]
    if advanced:
        advanced = [k for k, i in enumerate(index) if _is_array(i) or _is_int(i)]
        return _advanced(x, index, advanced)
    return _basic(x, index)


def _is_int(item) -> bool:
    return isinstance(item, (int, np.integer)) and not isinstance(item, bool)


def _expand_bool_masks(index: tuple) -> tuple:
    """A constant k-d boolean mask becomes its k nonzero() index arrays (as in NumPy)."""
    out = []
    for item in index:
        if isinstance(item, Tracer) and item.dtype == np.bool_:
            raise UnsupportedError(
                "boolean-mask indexing with a traced mask has a data-dependent shape",
                fix="use np.where(mask, x, 0) to zero out elements, or multiply by the mask",
            )
        if isinstance(item, (np.ndarray, list)) and np.asarray(item).dtype == np.bool_:
            out.extend(np.nonzero(np.asarray(item)))
        else:
            out.append(item)
    return tuple(out)


def _basic(x, index):
    """Slices, integers and None (no arrays): one SLICE, flips, one RESHAPE."""
    starts, stops, steps, out_shape, flips = [], [], [], [], []
    axis = 0
    for item in index:
        if item is None:
            out_shape.append(1)
            continue
        dim = x.shape[axis]
        if isinstance(item, slice):
            elements = range(*item.indices(dim))
            n = len(elements)
            if elements.step < 0 and n:
                flips.append((axis, n))
                elements = elements[::-1]  # the same elements, ascending
            start = elements.start if n else 0
            step = abs(elements.step)
            starts.append(start), stops.append(start + (n - 1) * step + 1 if n else 0)
            steps.append(step)
            out_shape.append(n)
        else:
            k = _int_index(item, axis, dim)
            starts.append(k), stops.append(k + 1), steps.append(1)
        axis += 1
    result = F.slice_(x, starts, stops, steps)
    for axis, n in flips:  # reverse the axis: a gather of n-1, ..., 0
        if n > 1:
            result = F.gather(result, np.arange(n - 1, -1, -1), axis)
    return F.reshape(result, out_shape)


def _int_index(item, axis: int, dim: int) -> int:
    try:
        k = int(item)
    except TypeError:
        raise UnsupportedError(
            f"unsupported index {item!r}",
            fix="index with integers, slices, None, Ellipsis or integer arrays") from None
    if not -dim <= k < dim:
        raise IndexError(f"index {k} is out of bounds for axis {axis} with size {dim}")
    return k % dim


def _advanced(x, index: tuple, advanced: list[int]):
    """Integer arrays (and integers beside them): one GATHER over the merged indexed axes."""
    adjacent = advanced == list(range(advanced[0], advanced[-1] + 1))
    # 1. Basic indexing for slices and None; the array-indexed axes are kept whole. `where`
    #    tracks the axis of the result each index item lands on.
    pre, where, axis = [], {}, 0
    for k, item in enumerate(index):
        if item is None:
            pre.append(None)
            axis += 1
        elif k in advanced:
            pre.append(slice(None))
            where[k] = axis
            axis += 1
        else:
            pre.append(item)
            axis += 1
    x = _basic(x, tuple(pre))
    src = [where[k] for k in advanced]
    dims = [x.shape[a] for a in src]
    # 2. The flat index over the indexed axes, in the broadcast shape of the index arrays.
    idx = [i if isinstance(i, Tracer) else np.asarray(i) for i in (index[k] for k in advanced)]
    shape = F.broadcast_shapes(*idx, what="index arrays")
    flat = None
    for array, dim, a in zip(idx, dims, src):
        if not isinstance(array, Tracer) and array.size:
            if array.min() < -dim or array.max() >= dim:
                bad = array[(array < -dim) | (array >= dim)].ravel()[0]
                raise IndexError(f"index {bad} is out of bounds for axis {a} with size {dim}")
        array = F.where(F.less(array, 0), F.add(array, dim), array)  # negative indices wrap
        flat = array if flat is None else F.add(F.multiply(flat, dim), array)
    flat = F.broadcast_to(F.astype(flat, np.int64), shape)
    # 3. Move the indexed axes together (where the first stands, or first of all), merge them
    #    into one axis and gather: the index shape replaces that axis.
    target = src[0] if adjacent else 0
    rest = [a for a in range(x.ndim) if a not in src]
    perm = rest[:target] + src + rest[target:]
    x = F.transpose(x, perm)
    merged = int(np.prod(dims, dtype=np.int64))
    x = F.reshape(x, x.shape[:target] + (merged,) + x.shape[target + len(src) :])
    if not isinstance(flat, Tracer):
        flat = np.ascontiguousarray(flat)
    return F.gather(x, flat, target)
