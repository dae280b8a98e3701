"""NumPy's shape, joining and rearranging functions on tracers beyond compiler/numpy_api.py's
core: vstack hstack dstack column_stack atleast_1d/2d/3d array_split hsplit vsplit dsplit
tile repeat roll rollaxis flip flipud fliplr rot90 pad broadcast_arrays meshgrid.

All of them are compositions: RESHAPE, BROADCAST_TO, CONCATENATE, SLICE, PAD and GATHER with a
constant index (flip, repeat, the edge and reflect modes of pad), so their gradients and code
come from those primitives.
"""

from __future__ import annotations

import numpy as np

from compiler import numpy_api as N
from compiler import primitives as F
from compiler.errors import ShapeMismatchError, UnsupportedError
from compiler.indexing import getitem
from compiler.tracing import Tracer


def _lifted(arrays):
    arrays = list(arrays)
    return [N._lift(a, arrays) for a in arrays]


def atleast_1d(*arrays):
    out = [x if x.ndim >= 1 else F.reshape(x, (1,)) for x in _lifted(arrays)]
    return out[0] if len(out) == 1 else out


def atleast_2d(*arrays):
    out = []
    for x in _lifted(arrays):
        out.append(x if x.ndim >= 2 else F.reshape(x, (1,) * (2 - x.ndim) + x.shape))
    return out[0] if len(out) == 1 else out


def atleast_3d(*arrays):
    out = []
    for x in _lifted(arrays):
        if x.ndim == 0:
            x = F.reshape(x, (1, 1, 1))
        elif x.ndim == 1:
            x = F.reshape(x, (1, x.shape[0], 1))
        elif x.ndim == 2:
            x = F.reshape(x, x.shape + (1,))
        out.append(x)
    return out[0] if len(out) == 1 else out


def _as_list(result):
    return result if isinstance(result, list) else [result]


def vstack(tup, *, dtype=None, casting="same_kind"):
    return N.concatenate(_as_list(atleast_2d(*tup)), 0, dtype=dtype)


def hstack(tup, *, dtype=None, casting="same_kind"):
    arrays = _as_list(atleast_1d(*tup))
    return N.concatenate(arrays, 0 if arrays[0].ndim == 1 else 1, dtype=dtype)


def dstack(tup):
    return N.concatenate(_as_list(atleast_3d(*tup)), 2)


def column_stack(tup):
    arrays = [x if x.ndim >= 2 else F.reshape(x, (x.size, 1)) for x in _lifted(tup)]
    return N.concatenate(arrays, 1)


def array_split(x, indices_or_sections, axis=0):
    axis %= x.ndim
    if np.ndim(indices_or_sections) != 0:
        return N.split(x, indices_or_sections, axis)
    sections = int(indices_or_sections)
    if sections <= 0:
        raise ShapeMismatchError("number sections must be larger than 0")
    each, extra = divmod(x.shape[axis], sections)
    sizes = [each + 1] * extra + [each] * (sections - extra)
    return N.split(x, np.cumsum(sizes)[:-1].tolist(), axis)


def hsplit(x, indices_or_sections):
    if x.ndim == 0:
        raise ShapeMismatchError("hsplit only works on arrays of 1 or more dimensions")
    return N.split(x, indices_or_sections, 1 if x.ndim > 1 else 0)


def vsplit(x, indices_or_sections):
    if x.ndim < 2:
        raise ShapeMismatchError("vsplit only works on arrays of 2 or more dimensions")
    return N.split(x, indices_or_sections, 0)


def dsplit(x, indices_or_sections):
    if x.ndim < 3:
        raise ShapeMismatchError("dsplit only works on arrays of 3 or more dimensions")
    return N.split(x, indices_or_sections, 2)


def tile(x, reps):
    reps = (int(reps),) if np.ndim(reps) == 0 else tuple(int(r) for r in reps)
    ndim = max(x.ndim, len(reps))
    reps = (1,) * (ndim - len(reps)) + reps
    x = F.reshape(x, (1,) * (ndim - x.ndim) + x.shape)
    # (r0, d0, r1, d1, ...) by broadcasting, then merged pairwise
    spread = F.reshape(x, [v for d in x.shape for v in (1, d)])
    target = [v for r, d in zip(reps, x.shape) for v in (r, d)]
    return F.reshape(F.broadcast_to(spread, target), [r * d for r, d in zip(reps, x.shape)])


def _take_constant(x, index, axis: int):
    return F.gather(x, np.ascontiguousarray(index, dtype=np.int64), axis)


def repeat(x, repeats, axis=None):
    if isinstance(repeats, Tracer):
        raise UnsupportedError("np.repeat with traced repeats has a data-dependent shape",
                               fix="pass the repeat counts as constants")
    if axis is None:
        x, axis = N.ravel(x), 0
    axis %= x.ndim
    index = np.repeat(np.arange(x.shape[axis]), repeats)
    return _take_constant(x, index, axis)


def roll(x, shift, axis=None):
    if axis is None:
        return F.reshape(roll(N.ravel(x), shift, 0), x.shape)
    shifts = (shift,) if np.ndim(shift) == 0 else tuple(shift)
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    if len(shifts) == 1:
        shifts = shifts * len(axes)
    if len(axes) == 1 and len(shifts) > 1:
        axes = axes * len(shifts)
    for s, a in zip(shifts, axes):
        a %= x.ndim
        n = x.shape[a]
        if n == 0 or int(s) % n == 0:
            continue
        k = int(s) % n
        index = [slice(None)] * x.ndim
        head, tail = list(index), list(index)
        head[a], tail[a] = slice(n - k, n), slice(0, n - k)
        x = F.concatenate([getitem(x, tuple(head)), getitem(x, tuple(tail))], a)
    return x


def rollaxis(x, axis, start=0):
    ndim = x.ndim
    axis %= ndim
    start = start + ndim if start < 0 else start
    if not 0 <= start <= ndim:
        raise ShapeMismatchError(f"rollaxis start {start} is out of range for rank {ndim}")
    if axis < start:
        start -= 1
    if axis == start:
        return x
    return N.moveaxis(x, axis, start)


def flip(x, axis=None):
    axes = range(x.ndim) if axis is None else N._axes(axis, x.ndim)
    for a in axes:
        x = _take_constant(x, np.arange(x.shape[a] - 1, -1, -1), a)
    return x


def flipud(x):
    return flip(x, 0)


def fliplr(x):
    return flip(x, 1)


def rot90(x, k=1, axes=(0, 1)):
    a, b = (ax % x.ndim for ax in axes)
    if a == b:
        raise ShapeMismatchError("rot90: the axes must differ")
    k %= 4
    if k == 0:
        return x
    if k == 2:
        return flip(flip(x, a), b)
    perm = list(range(x.ndim))
    perm[a], perm[b] = perm[b], perm[a]
    if k == 1:
        return F.transpose(flip(x, b), perm)
    return flip(F.transpose(x, perm), b)


def _pad_widths(pad_width, ndim: int):
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (ndim, 2))
    if (widths < 0).any():
        raise ShapeMismatchError("np.pad widths must be non-negative")
    return [(int(lo), int(hi)) for lo, hi in widths]


def _pad_index(n: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """The source index of each padded position along one axis (NumPy's modes)."""
    positions = np.arange(-lo, n + hi)
    if mode == "edge":
        return np.clip(positions, 0, n - 1)
    if mode == "wrap":
        return positions % n
    period = 2 * n - 2 if mode == "reflect" else 2 * n
    if period == 0:
        return np.zeros_like(positions)
    p = positions % period
    if mode == "reflect":
        return np.where(p < n, p, period - p)
    return np.where(p < n, p, period - 1 - p)  # symmetric


def pad(x, pad_width, mode="constant", **kwargs):
    widths = _pad_widths(pad_width, x.ndim)
    if mode == "constant":
        padded = F.pad(x, [lo for lo, _ in widths], [hi for _, hi in widths])
        values = kwargs.get("constant_values", 0)
        if np.all(np.asarray(values) == 0):
            return padded
        inside = np.zeros(padded.shape, bool)
        inside[tuple(slice(lo, lo + d) for (lo, _), d in zip(widths, x.shape))] = True
        fill = np.zeros(padded.shape, x.dtype)
        for axis, ((lo, _), d) in enumerate(zip(widths, x.shape)):
            pair = np.broadcast_to(np.asarray(values), (x.ndim, 2))[axis]
            for value, part in ((pair[0], slice(0, lo)), (pair[1], slice(lo + d, None))):
                index = [slice(None)] * x.ndim
                index[axis] = part
                fill[tuple(index)] = value
        return F.where(inside, padded, fill)
    if mode not in ("edge", "reflect", "symmetric", "wrap"):
        raise UnsupportedError(f"np.pad(mode={mode!r}) on traced values",
                               fix="use mode 'constant', 'edge', 'reflect', 'symmetric' or "
                               "'wrap'")
    if kwargs.get("reflect_type", "even") != "even":
        raise UnsupportedError("np.pad(reflect_type='odd')", fix="use the default 'even'")
    for axis, (lo, hi) in enumerate(widths):
        if lo or hi:
            x = _take_constant(x, _pad_index(x.shape[axis], lo, hi, mode), axis)
    return x


def broadcast_arrays(*args, subok=False):
    arrays = _lifted(args)
    shape = F.broadcast_shapes(*arrays)
    return tuple(F.broadcast_to(a, shape) for a in arrays)


def meshgrid(*xi, copy=True, sparse=False, indexing="xy"):
    xs = [N.ravel(x) for x in _lifted(xi)]
    ndim = len(xs)
    out = []
    for k, x in enumerate(xs):
        shape = [1] * ndim
        shape[k] = x.size
        if indexing == "xy" and ndim > 1 and k < 2:
            shape[0], shape[1] = shape[1], shape[0]
        out.append(F.reshape(x, shape))
    if not sparse:
        out = list(broadcast_arrays(*out))
    return tuple(out)


UFUNCS = {}
FUNCTIONS = {
    np.atleast_1d: atleast_1d, np.atleast_2d: atleast_2d, np.atleast_3d: atleast_3d,
    np.vstack: vstack,
    np.hstack: hstack, np.dstack: dstack, np.column_stack: column_stack,
    np.array_split: array_split, np.hsplit: hsplit, np.vsplit: vsplit, np.dsplit: dsplit,
    np.tile: tile, np.repeat: repeat, np.roll: roll, np.rollaxis: rollaxis, np.flip: flip,
    np.flipud: flipud, np.fliplr: fliplr, np.rot90: rot90, np.pad: pad,
    np.broadcast_arrays: broadcast_arrays, np.meshgrid: meshgrid,
}
TRACER_METHODS = {"repeat": repeat}
