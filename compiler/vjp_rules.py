"""The VJP rule table: for every differentiable primitive, its vector-Jacobian product.

Autodiff (`compiler/autodiff.py`) walks the recorded forward graph backwards and, for each
node, calls `VJP_RULES[node.op](g, out, *inputs, **params)`: `g` is the cotangent of the
node's output, `out` its primal output, then its inputs and parameters. A rule returns one
cotangent per input (`None`: no gradient). Rules are written with the primitives
(compiler/primitives.py), so the backward graph is ordinary IR and can itself be
differentiated (grad of grad).

Rules follow the dimension-compatibility method: differentiate as if scalars, then reorder
and transpose until the shapes agree (``Y = X W``: ``dX = G Wᵀ``, ``dW = Xᵀ G``). Operands
of an elementwise node already share its shape (the tracer inserts BROADCAST_TO), so only
BROADCAST_TO's rule sums back to a smaller shape. The maths of each rule is the trailing
comment on its `return`; autodiff reads it (`vjp_maths`) to label the backward nodes.

Conventions at non-differentiable points (as JAX, which NumPy-ecosystem users know):

- MAX/MIN at a tie (x == y) give half of g to each operand. So relu written as
  ``np.maximum(x, 0)`` has derivative 0.5 at exactly x == 0 (as ``jnp.maximum``).
- REDUCE_MAX distributes g equally among the tied maxima (each gets g / count), so the
  gradient of ``max`` always sums to g.
- ABS: ``sign(x) * g``, so 0 at x == 0. SIGN, comparisons, STOP_GRADIENT, RANDOM_UNIFORM and
  CONSTANT have no derivative (`NON_DIFFERENTIABLE`), nor do integer or bool values.
- POW: ``d/dy x**y = log(x) x**y`` uses log(1) at x == 0 (so 0 there); ``d/dx`` is 0 where
  y == 0. REDUCE_PROD is exact with zeros (the product of the other elements, no division
  by zero).
- CAST float -> float casts the cotangent back; casts from or to integers/bool: no gradient.
"""

from __future__ import annotations

import ast
import functools
import inspect
import io
import textwrap
import tokenize
from collections.abc import Callable

import numpy as np

from compiler import primitives as F
from compiler import primitives_extra as E
from compiler.errors import TraceError
from ir.ops import Op

VjpRule = Callable[..., tuple]

# op -> rule(g, out, *inputs, **params) -> one cotangent (or None) per input
VJP_RULES: dict[Op, VjpRule] = {}

NON_DIFFERENTIABLE = frozenset(
    {Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE, Op.SIGN, Op.STOP_GRADIENT, Op.RANDOM_UNIFORM,
     Op.CONSTANT, Op.ARGSORT}
)


def vjp_rule(op: Op):
    def register(fn: VjpRule) -> VjpRule:
        VJP_RULES[op] = fn
        return fn

    return register


@functools.cache
def vjp_maths(op: Op) -> tuple[str, ...]:
    """The maths of ``op``'s rule, one string per input when the comment splits that way; read
    from the source on first use (parsing every rule at import would cost a warm start ~50 ms)."""
    return rule_maths(VJP_RULES[op]) if op in VJP_RULES else ()


def rule_maths(fn: Callable) -> tuple[str, ...]:
    """The trailing comments on a rule's `return` statements, split per input where the
    comment reads ``dX = ..., dW = ...`` (one part per ``d<name> =``)."""
    source = textwrap.dedent(inspect.getsource(fn))
    return_lines: set[int] = set()
    for stmt in ast.walk(ast.parse(source)):
        if isinstance(stmt, ast.Return):
            return_lines.update(range(stmt.lineno, stmt.end_lineno + 1))
    comments = [
        tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT and tok.start[0] in return_lines
    ]
    parts: list[str] = []
    for comment in comments:
        for part in comment.split(", d"):
            parts.append(part if not parts or part.startswith("d") else "d" + part)
    return tuple(parts)


# -- helpers used by several rules (primitives only) ---------------------------------------


def _keepdims_shape(shape, axes):
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def _unreduce(g, x, axes):
    """A reduction's cotangent, broadcast back over the reduced axes to x's shape."""
    return F.broadcast_to(F.reshape(g, _keepdims_shape(x.shape, axes)), x.shape)


def _swap_last(x):
    perm = tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2)
    return F.transpose(x, perm)


# -- elementwise, one operand --------------------------------------------------------------


@vjp_rule(Op.NEG)
def _neg_vjp(g, out, x):
    return (F.negative(g),)  # dx = -g


@vjp_rule(Op.EXP)
def _exp_vjp(g, out, x):
    return (g * out,)  # dx = g exp(x), reusing the primal output


@vjp_rule(Op.LOG)
def _log_vjp(g, out, x):
    return (g / x,)  # dx = g / x


@vjp_rule(Op.LOG1P)
def _log1p_vjp(g, out, x):
    return (g / (1 + x),)  # dx = g / (1 + x)


@vjp_rule(Op.EXPM1)
def _expm1_vjp(g, out, x):
    return (g * (out + 1),)  # dx = g exp(x) = g (expm1(x) + 1)


@vjp_rule(Op.SQRT)
def _sqrt_vjp(g, out, x):
    return (g / (2 * out),)  # dx = g / (2 sqrt(x))


@vjp_rule(Op.TANH)
def _tanh_vjp(g, out, x):
    return (g * (1 - out * out),)  # dx = g (1 - tanh²(x))


@vjp_rule(Op.LOGISTIC)
def _logistic_vjp(g, out, x):
    return (g * out * (1 - out),)  # dx = g σ(x) (1 - σ(x))


@vjp_rule(Op.SIN)
def _sin_vjp(g, out, x):
    return (g * F.cos(x),)  # dx = g cos(x)


@vjp_rule(Op.COS)
def _cos_vjp(g, out, x):
    return (F.negative(g * F.sin(x)),)  # dx = -g sin(x)


@vjp_rule(Op.ABS)
def _abs_vjp(g, out, x):
    return (g * F.sign(x),)  # dx = g sign(x), 0 at x = 0


@vjp_rule(Op.CAST)
def _cast_vjp(g, out, x, *, dtype):
    if x.dtype.kind != "f" or np.dtype(dtype).kind != "f":
        return (None,)  # no gradient through integer or bool values
    return (F.astype(g, x.dtype),)  # dx = cast(g) back to x's dtype


# -- elementwise, two or three operands ----------------------------------------------------


@vjp_rule(Op.ADD)
def _add_vjp(g, out, x, y):
    return (g, g)  # dx = g, dy = g


@vjp_rule(Op.SUB)
def _sub_vjp(g, out, x, y):
    return (g, F.negative(g))  # dx = g, dy = -g


@vjp_rule(Op.MUL)
def _mul_vjp(g, out, x, y):
    return (g * y, g * x)  # dx = g y, dy = g x


@vjp_rule(Op.DIV)
def _div_vjp(g, out, x, y):
    return (g / y, F.negative(g * out / y))  # dx = g / y, dy = -g x / y²


@vjp_rule(Op.POW)
def _pow_vjp(g, out, x, y):
    # Each masked branch reads a safe operand (the double-where idiom), so the branch not
    # taken is finite and its derivative (grad of grad) is 0, not 0 * inf = nan.
    safe_x = F.where(F.equal(x, 0), 1.0, x)
    zero_y = F.equal(y, 0)
    dx = F.where(zero_y, 0.0, g * y * F.power(F.where(zero_y, 1.0, x), y - 1))
    dy = g * out * F.log(safe_x)
    return (dx, dy)  # dx = g y x^(y-1), dy = g x^y log(x)


def _tie_split(g, x, y):
    """g where x wins, g/2 at a tie, 0 where y wins (JAX's convention for max/min)."""
    return F.where(F.equal(x, y), 0.5 * g, F.where(F.greater(x, y), g, 0.0))


@vjp_rule(Op.MAX)
def _max_vjp(g, out, x, y):
    return (_tie_split(g, x, y), _tie_split(g, y, x))  # dx = g [x > y], dy = g [y > x]; ties g/2


@vjp_rule(Op.MIN)
def _min_vjp(g, out, x, y):
    return (_tie_split(g, y, x), _tie_split(g, x, y))  # dx = g [x < y], dy = g [y < x]; ties g/2


@vjp_rule(Op.WHERE)
def _where_vjp(g, out, cond, x, y):
    return (None, F.where(cond, g, 0.0), F.where(cond, 0.0, g))  # dx = g [c], dy = g [not c]


# -- movement ------------------------------------------------------------------------------


@vjp_rule(Op.BROADCAST_TO)
def _broadcast_to_vjp(g, out, x, *, shape):
    lead = len(shape) - x.ndim
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(x.shape) if d == 1 and shape[lead + i] != 1
    )
    return (F.reshape(F.reduce_sum(g, axes), x.shape),)  # dx = sum of g over broadcast axes


@vjp_rule(Op.RESHAPE)
def _reshape_vjp(g, out, x, *, shape):
    return (F.reshape(g, x.shape),)  # dx = reshape(g, x.shape)


@vjp_rule(Op.TRANSPOSE)
def _transpose_vjp(g, out, x, *, perm):
    return (F.transpose(g, tuple(np.argsort(perm))),)  # dx = transpose(g, perm⁻¹)


@vjp_rule(Op.SLICE)
def _slice_vjp(g, out, x, *, starts, stops, steps):
    highs = tuple(
        dim - (start + (n - 1) * step + 1) if n else dim - start
        for dim, start, step, n in zip(x.shape, starts, steps, g.shape)
    )
    interiors = tuple(step - 1 if n else 0 for step, n in zip(steps, g.shape))
    return (F.pad(g, starts, highs, interiors),)  # dx = pad(g) with zeros between the steps


@vjp_rule(Op.PAD)
def _pad_vjp(g, out, x, *, lows, highs, interiors):
    stops = tuple(lo + max(d - 1, 0) * (i + 1) + (1 if d else 0)
                  for lo, d, i in zip(lows, x.shape, interiors))
    steps = tuple(i + 1 for i in interiors)
    return (F.slice_(g, lows, stops, steps),)  # dx = the window of g that x was padded into


@vjp_rule(Op.CONCATENATE)
def _concatenate_vjp(g, out, *xs, axis):
    pieces, start = [], 0
    for x in xs:
        starts = tuple(start if i == axis else 0 for i in range(g.ndim))
        stops = tuple(start + x.shape[axis] if i == axis else d for i, d in enumerate(g.shape))
        pieces.append(F.slice_(g, starts, stops, (1,) * g.ndim))
        start += x.shape[axis]
    return tuple(pieces)  # dxᵢ = g[..., offsetᵢ : offsetᵢ + nᵢ, ...]


# -- reductions ----------------------------------------------------------------------------


@vjp_rule(Op.REDUCE_SUM)
def _reduce_sum_vjp(g, out, x, *, axes):
    return (_unreduce(g, x, axes),)  # dx = g broadcast back over the summed axes


@vjp_rule(Op.REDUCE_MAX)
def _reduce_max_vjp(g, out, x, *, axes):
    is_max = F.astype(F.equal(x, _unreduce(out, x, axes)), x.dtype)
    count = F.reduce_sum(is_max, axes)
    return (is_max * _unreduce(g / count, x, axes),)  # dx = g [x = max] / #ties


@vjp_rule(Op.REDUCE_PROD)
def _reduce_prod_vjp(g, out, x, *, axes):
    # The product of the *other* elements, exact when x has zeros: with no zero it is
    # out / x; with one zero only that position gets the product of the non-zeros.
    is_zero = F.equal(x, 0)
    nonzero = F.where(is_zero, 1.0, x)
    prod_nonzero = _unreduce(F.reduce_prod(nonzero, axes), x, axes)
    zeros = _unreduce(F.reduce_sum(F.astype(is_zero, x.dtype), axes), x, axes)
    only_zero = F.where(is_zero, F.where(F.equal(zeros, 1), prod_nonzero, 0.0), 0.0)
    others = F.where(F.equal(zeros, 0), prod_nonzero / nonzero, only_zero)
    return (_unreduce(g, x, axes) * others,)  # dxᵢ = g Π_{j≠i} xⱼ


# -- indexing and contraction --------------------------------------------------------------


@vjp_rule(Op.GATHER)
def _gather_vjp(g, out, x, idx, *, axis):
    return (F.scatter_add(g, idx, axis, x.shape[axis]), None)  # dx = scatter_add(g at idx)


@vjp_rule(Op.SCATTER_ADD)
def _scatter_add_vjp(g, out, updates, idx, *, axis, size):
    return (F.gather(g, idx, axis), None)  # dupdates = gather(g at idx)


@vjp_rule(Op.MATMUL)
def _matmul_vjp(g, out, x, w):
    return (
        F.matmul_primitive(g, _swap_last(w)),  # dX = G Wᵀ
        F.matmul_primitive(_swap_last(x), g),  # dW = Xᵀ G
    )


@vjp_rule(Op.CONV2D)
def _conv2d_vjp(g, out, x, w, *, strides, padding, dilation):
    (o, c, kh, kw), (ho, wo) = w.shape, g.shape[2:]
    # dX: correlate g (strides as zeros between its pixels) with the flipped, transposed kernel
    gd = g if strides == (1, 1) else F.pad(g, (0,) * 4, (0,) * 4, (0, 0, strides[0] - 1,
                                                                  strides[1] - 1))
    flip = np.arange(kh * kw - 1, -1, -1)  # reversing (i, j) flat = flipping both axes
    wf = F.reshape(F.gather(F.reshape(F.transpose(w, (1, 0, 2, 3)), (c, o, kh * kw)), flip, 2),
                   (c, o, kh, kw))
    pad_x = tuple((d * (k - 1) - lo, size - 1 - (n - 1) * s + lo) for size, k, n, s, d, (lo, _)
                  in zip(x.shape[2:], (kh, kw), (ho, wo), strides, dilation, padding))
    # dW: correlate x (channels as batch) with g (batch as channels): strides and dilation swap
    pad_w = tuple((lo, (k - 1) * d + (n - 1) * s + 1 - size - lo) for size, k, n, s, d, (lo, _)
                  in zip(x.shape[2:], (kh, kw), (ho, wo), strides, dilation, padding))
    dw = F.conv2d_primitive(F.transpose(x, (1, 0, 2, 3)), F.transpose(g, (1, 0, 2, 3)),
                            dilation, pad_w, strides)
    return (
        F.conv2d_primitive(gd, wf, (1, 1), pad_x, dilation),  # dX = conv(g, flip(Wᵀ))
        F.transpose(dw, (1, 0, 2, 3)),  # dW = conv(Xᵀ, Gᵀ)ᵀ
    )


# -- library ops (ir/ops.py's LIBRARY group) -----------------------------------------------


@vjp_rule(Op.ATAN2)
def _atan2_vjp(g, out, y, x):
    r2 = y * y + x * x
    return (g * x / r2, F.negative(g * y / r2))  # dy = g x / (x² + y²), dx = -g y / (x² + y²)


@vjp_rule(Op.FMOD)
def _fmod_vjp(g, out, x, y):
    return (g, F.negative(g * E.trunc(x / y)))  # dx = g, dy = -g trunc(x / y)


def _eye_like(a):
    n = a.shape[-1]
    return F.broadcast_to(np.eye(n, dtype=a.dtype), a.shape)


def _tril_mask(n, k=0):
    return np.tril(np.ones((n, n), dtype=bool), k)


@vjp_rule(Op.SOLVE)
def _solve_vjp(g, out, a, b):
    db = E.solve(_swap_last(a), g)
    return (F.negative(F.matmul_primitive(db, _swap_last(out))), db)  # dA = -dB Xᵀ, dB = A⁻ᵀ G


@vjp_rule(Op.SLOGDET)
def _slogdet_vjp(g, out, a):
    n = g.ndim
    g_log = F.slice_(g, (0,) * (n - 1) + (1,), g.shape, (1,) * n)  # the sign has no gradient
    inv_t = E.solve(_swap_last(a), _eye_like(a))
    g_log = F.broadcast_to(F.reshape(g_log, g.shape[:-1] + (1, 1)), a.shape)
    return (g_log * inv_t,)  # dA = g A⁻ᵀ (d log|det A| = tr(A⁻¹ dA))


@vjp_rule(Op.CHOLESKY)
def _cholesky_vjp(g, out, a):
    # Murray (2016): S = L⁻ᵀ Φ(Lᵀ Ḡ) L⁻¹, Φ = lower triangle with a halved diagonal. NumPy
    # reads only a's lower triangle (a = tril(a) + tril(a, -1)ᵀ), hence tril(S + Sᵀ) - diag S.
    n = a.shape[-1]
    lower, strict = _tril_mask(n), _tril_mask(n, -1)
    lt = _swap_last(out)
    phi = F.matmul_primitive(lt, g)
    phi = F.where(strict, phi, F.where(lower, 0.5 * phi, 0.0))
    s = _swap_last(E.solve(lt, _swap_last(E.solve(lt, phi))))
    sym = s + _swap_last(s)
    return (F.where(strict, sym, F.where(lower, s, 0.0)),)  # dA = tril(S + Sᵀ) - diag(S)


@vjp_rule(Op.ALL_REDUCE)
def _all_reduce_vjp(g, out, x, *, reduction, shapes):
    # out = Σ_ranks x on every rank, so a rank's x reaches every rank's loss: its cotangent
    # is the same reduction of every rank's g (mean: 1/N of it)
    if reduction not in ("sum", "mean") or len(shapes) != 1:
        what = f"op={reduction!r}" if len(shapes) == 1 else "a buffer of several parts"
        raise TraceError(f"all_reduce({what}) has no gradient (only sum and mean of one "
                         "value do)", fix="all_reduce each value that needs a gradient with "
                         "sum or mean, or wrap it in stop_gradient")
    from compiler.collectives import all_reduce

    return (all_reduce(g, reduction),)  # dX = all_reduce(G)


@vjp_rule(Op.FUSED)
@vjp_rule(Op.GEMM)
def _fused_vjp(g, out, *xs, **params):
    raise NotImplementedError("autodiff runs on the traced graph, before fusion")


@vjp_rule(Op.SCAN)
@vjp_rule(Op.WHILE)
def _loop_vjp(g, out, *xs, **params):
    # one cotangent per output, not one `g`: autodiff calls compiler/loops_vjp.py instead
    raise NotImplementedError("loops are differentiated by compiler/loops_vjp.loop_backward")
