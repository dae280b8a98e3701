"""NumPy's matrix functions and `np.linalg` on tracers: tensordot inner kron trace diag diagonal
tril triu, `np.linalg.norm` (vector ords, Frobenius, the 1/inf matrix norms, axis, keepdims),
solve inv det slogdet cholesky matrix_power multi_dot.

Matrix helpers are compositions (constant masks with WHERE, GATHER with a constant index for
diagonals, MATMUL for contractions). Linear algebra is the LAPACK-backed primitives SOLVE,
SLOGDET and CHOLESKY (compiler/primitives_extra.py; their VJPs are in compiler/vjp_rules.py):
inv(a) is solve(a, I), which is how NumPy computes it too, and det(a) is sign·exp(log|det|).
Decompositions without a primitive (svd, eig, qr, ...) raise an error saying so.
"""

from __future__ import annotations

import numpy as np

from compiler import numpy_api as N
from compiler import primitives as F
from compiler import primitives_extra as E
from compiler.errors import ShapeMismatchError, UnsupportedError


def _lift2(a, b):
    return N._lift(a, [a, b]), N._lift(b, [a, b])


# -- contractions --------------------------------------------------------------------------


def tensordot(a, b, axes=2):
    a, b = _lift2(a, b)
    if np.ndim(axes) == 0:
        k = int(axes)
        axes_a, axes_b = list(range(a.ndim - k, a.ndim)), list(range(k))
    else:
        axes_a, axes_b = axes
        axes_a = [axes_a] if np.ndim(axes_a) == 0 else list(axes_a)
        axes_b = [axes_b] if np.ndim(axes_b) == 0 else list(axes_b)
    axes_a = [x % a.ndim for x in axes_a]
    axes_b = [x % b.ndim for x in axes_b]
    if [a.shape[i] for i in axes_a] != [b.shape[i] for i in axes_b]:
        raise ShapeMismatchError(f"tensordot: shape mismatch for sum: {a.shape} axes {axes_a}, "
                                 f"{b.shape} axes {axes_b}")
    free_a = [i for i in range(a.ndim) if i not in axes_a]
    free_b = [i for i in range(b.ndim) if i not in axes_b]
    k = int(np.prod([a.shape[i] for i in axes_a], dtype=np.int64))
    m = int(np.prod([a.shape[i] for i in free_a], dtype=np.int64))
    n = int(np.prod([b.shape[i] for i in free_b], dtype=np.int64))
    left = F.reshape(F.transpose(a, free_a + axes_a), (m, k))
    right = F.reshape(F.transpose(b, axes_b + free_b), (k, n))
    out_shape = [a.shape[i] for i in free_a] + [b.shape[i] for i in free_b]
    return F.reshape(N.matmul(left, right), out_shape)


def inner(a, b):
    a, b = _lift2(a, b)
    if a.ndim == 0 or b.ndim == 0:
        return F.multiply(a, b)
    return tensordot(a, b, ([-1], [-1]))


def kron(a, b):
    a, b = _lift2(a, b)
    ndim = max(a.ndim, b.ndim)
    a = F.reshape(a, (1,) * (ndim - a.ndim) + a.shape)
    b = F.reshape(b, (1,) * (ndim - b.ndim) + b.shape)
    spread_a = F.reshape(a, [v for d in a.shape for v in (d, 1)])
    spread_b = F.reshape(b, [v for d in b.shape for v in (1, d)])
    product = F.multiply(spread_a, spread_b)  # (a0, b0, a1, b1, ...)
    return F.reshape(product, [da * db for da, db in zip(a.shape, b.shape)])


def multi_dot(arrays, *, out=None):
    N._no_out(out, "multi_dot")
    result = arrays[0]
    for x in arrays[1:]:
        result = N.matmul(result, x)
    return result


def matrix_power(a, n):
    if n < 0:
        a, n = inv(a), -n
    if n == 0:
        return F.broadcast_to(np.eye(a.shape[-1], dtype=a.dtype), a.shape)
    result, base = None, a
    while n:  # square and multiply
        if n & 1:
            result = base if result is None else N.matmul(result, base)
        n >>= 1
        if n:
            base = N.matmul(base, base)
    return result


# -- diagonals and triangles ------------------------------------------------------------------


def _diagonal_index(rows: int, cols: int, offset: int) -> np.ndarray:
    r = np.arange(rows)
    r = r[(r + offset >= 0) & (r + offset < cols)]  # rows whose column r + offset exists
    return (r * cols + r + offset).astype(np.int64)


def diagonal(x, offset=0, axis1=0, axis2=1):
    a1, a2 = axis1 % x.ndim, axis2 % x.ndim
    if a1 == a2:
        raise ShapeMismatchError("diagonal: axis1 and axis2 cannot be the same")
    rest = [i for i in range(x.ndim) if i not in (a1, a2)]
    rows, cols = x.shape[a1], x.shape[a2]
    flat = F.reshape(F.transpose(x, rest + [a1, a2]), [x.shape[i] for i in rest] + [rows * cols])
    return F.gather(flat, _diagonal_index(rows, cols, int(offset)), len(rest))


def trace(x, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    N._no_out(out, "trace")
    return N.sum(diagonal(x, offset, axis1, axis2), axis=-1, dtype=dtype)


def diag(v, k=0):
    if v.ndim == 2:
        return diagonal(v, k)
    if v.ndim != 1:
        raise ShapeMismatchError("np.diag needs a 1-D or 2-D array")
    n = v.shape[0]
    m = n + abs(k)
    index = np.zeros((m, m), np.int64)
    mask = np.zeros((m, m), bool)
    r = np.arange(n)
    rows, cols = (r, r + k) if k >= 0 else (r - k, r)
    index[rows, cols] = r
    mask[rows, cols] = True
    return F.where(mask, F.gather(v, index, 0), np.zeros((), v.dtype))


def _triangle(x, k: int, lower: bool):
    rows, cols = x.shape[-2:]
    mask = np.tri(rows, cols, k, dtype=bool) if lower else ~np.tri(rows, cols, k - 1, dtype=bool)
    return F.where(mask, x, np.zeros((), x.dtype))


def tril(x, k=0):
    if x.ndim < 2:
        raise ShapeMismatchError("np.tril of a traced value needs rank >= 2")
    return _triangle(x, int(k), True)


def triu(x, k=0):
    if x.ndim < 2:
        raise ShapeMismatchError("np.triu of a traced value needs rank >= 2")
    return _triangle(x, int(k), False)


# -- norms ---------------------------------------------------------------------------------


def _vector_norm(x, ord, axis, keepdims):
    ax = F.absolute(x)
    if ord is None or ord == 2:
        return F.sqrt(N.sum(F.multiply(x, x), axis, keepdims=keepdims))
    if ord == np.inf:
        return N.amax(ax, axis, keepdims=keepdims)
    if ord == -np.inf:
        return N.amin(ax, axis, keepdims=keepdims)
    if ord == 0:
        return F.astype(N.sum(F.astype(F.not_equal(x, 0), x.dtype), axis, keepdims=keepdims),
                        x.dtype)
    if ord == 1:
        return N.sum(ax, axis, keepdims=keepdims)
    p = float(ord)
    return F.power(N.sum(F.power(ax, p), axis, keepdims=keepdims), 1.0 / p)


def _matrix_norm(x, ord, axes, keepdims):
    row, col = axes
    if ord in (None, "fro"):
        return F.sqrt(N.sum(F.multiply(x, x), axes, keepdims=keepdims))
    if ord in ("nuc", 2, -2):
        raise UnsupportedError(f"np.linalg.norm(ord={ord!r}) needs singular values (an SVD), "
                               "which chainjit does not trace",
                               fix="use ord='fro', 1, -1, inf or -inf, or compute it outside "
                               "the compiled function")
    if ord not in (1, -1, np.inf, -np.inf):
        raise UnsupportedError(f"np.linalg.norm: invalid norm order {ord!r} for matrices")
    summed_axis, over = (row, col) if abs(ord) == 1 else (col, row)
    sums = N.sum(F.absolute(x), summed_axis, keepdims=True)
    best = N.amax(sums, over, keepdims=True) if ord > 0 else N.amin(sums, over, keepdims=True)
    return best if keepdims else N.squeeze(best, (row, col))


def norm(x, ord=None, axis=None, keepdims=False):
    x = N._lift(x, [x])
    if x.dtype.kind != "f":
        x = F.astype(x, np.float64)
    if axis is None:
        if ord is None:
            result = F.sqrt(N.sum(F.multiply(x, x)))
            return F.reshape(result, (1,) * x.ndim) if keepdims else result
        if x.ndim == 1:
            return _vector_norm(x, ord, 0, keepdims)
        if x.ndim == 2:
            return _matrix_norm(x, ord, (0, 1), keepdims)
        raise ShapeMismatchError("np.linalg.norm: improper number of dimensions to norm")
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    axes = tuple(a % x.ndim for a in axes)
    if len(axes) == 1:
        return _vector_norm(x, ord, axes[0], keepdims)
    if len(axes) == 2:
        return _matrix_norm(x, ord, axes, keepdims)
    raise ShapeMismatchError("np.linalg.norm: improper number of dimensions to norm")


def vector_norm(x, *, axis=None, keepdims=False, ord=2):
    if axis is None:
        flat = _vector_norm(N.ravel(x), ord, 0, False)
        return F.reshape(flat, (1,) * x.ndim) if keepdims else flat
    return _vector_norm(x, ord, axis, keepdims)


def matrix_norm(x, *, keepdims=False, ord="fro"):
    return _matrix_norm(x, ord, (x.ndim - 2, x.ndim - 1), keepdims)


# -- linear algebra ------------------------------------------------------------------------


def solve(a, b):
    return E.solve(*_lift2(a, b))


def inv(a):
    E._check_square(a, "inv")
    (a,) = E._float_matrices(a)
    return E.solve(a, F.broadcast_to(np.eye(a.shape[-1], dtype=a.dtype), a.shape))


def slogdet(a):
    return E.slogdet(a)


def det(a):
    sign, logabsdet = E.slogdet(a)
    return F.multiply(sign, F.exp(logabsdet))


def cholesky(a, upper=False):
    return E.cholesky(a, upper)


def _no_decomposition(name: str):
    def fn(*args, **kwargs):
        raise UnsupportedError(
            f"np.linalg.{name} is not supported on traced values (no primitive for it)",
            fix="use solve, inv, det, slogdet or cholesky, or compute it outside the compiled "
            "function",
        )

    return fn


UFUNCS = {}
FUNCTIONS = {
    np.tensordot: tensordot, np.inner: inner, np.kron: kron, np.trace: trace, np.diag: diag,
    np.diagonal: diagonal, np.tril: tril, np.triu: triu,
    np.linalg.norm: norm, np.linalg.solve: solve, np.linalg.inv: inv, np.linalg.det: det,
    np.linalg.slogdet: slogdet, np.linalg.cholesky: cholesky,
    np.linalg.matrix_power: matrix_power, np.linalg.multi_dot: multi_dot,
    **{getattr(np.linalg, name): _no_decomposition(name)
       for name in ("svd", "eig", "eigh", "eigvals", "eigvalsh", "qr", "pinv", "lstsq",
                    "matrix_rank", "svdvals") if hasattr(np.linalg, name)},
}
for _name, _fn in (("vector_norm", vector_norm), ("matrix_norm", matrix_norm)):
    if hasattr(np.linalg, _name):
        FUNCTIONS[getattr(np.linalg, _name)] = _fn
# (no `x.trace()` method: `trace` is the Tracer's own Trace; np.trace(x) works)
TRACER_METHODS = {"diagonal": diagonal}
