"""The NumPy API of issue 17, one `OpSpec` per function (or variant), merged into
tests/compiler/op_specs.py's `OP_SPECS`: each is run forward against NumPy there
(tests/compiler/test_trace_ops.py), and its VJP against central differences and its Numba
build against NumPy in tests/compiler/test_numpy_api.py."""

from __future__ import annotations

import numpy as np

from tests.compiler.spec_type import OpSpec

S = (3, 4)
SQ = (2, 3, 3)
HALVES = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 2.0**60 + 2.0**8, 1e300, -0.49999999999999994])


def _quiet(fn):
    """fn with NumPy's floating-point warnings off (log of negatives: the NaN tests)."""
    def quiet(*xs):
        with np.errstate(all="ignore"):
            return fn(*xs)

    return quiet


def _u(name, fn, domain="real", **kw):
    return OpSpec(name, fn, (S,), domain, **kw)


def _b(name, fn, domain="real", **kw):
    return OpSpec(name, fn, (S, (4,)), domain, broadcasts=True, **kw)


NO_GRAD = {"grad": False}
FIRST = {"second_order": False}  # kinks: first order only

_UNARY = [
    _u("sinh", np.sinh), _u("cosh", np.cosh), _u("tan", np.tan, "unit"),
    _u("arcsin", np.arcsin, "unit"), _u("arccos", np.arccos, "unit"),
    _u("arctan", np.arctan), _u("arcsinh", np.arcsinh), _u("arccosh", np.arccosh, "above1"),
    _u("arctanh", np.arctanh, "unit"), _u("log2", np.log2, "positive"),
    _u("log10", np.log10, "positive"), _u("exp2", np.exp2), _u("sinc", np.sinc),
    _u("deg2rad", np.deg2rad), _u("rad2deg", np.rad2deg), _u("degrees", np.degrees),
    _u("radians", np.radians), _u("fabs", np.fabs, "away", **FIRST),
    _u("floor", lambda x: np.floor(3 * x), **NO_GRAD),
    _u("ceil", lambda x: np.ceil(3 * x), **NO_GRAD),
    _u("round", lambda x: np.round(3 * x), **NO_GRAD),
    OpSpec("round_halves_and_large", lambda x: np.round(x * 0 + HALVES) + np.floor(x * 0 + HALVES)
           * 2 + np.ceil(x * 0 - HALVES) * 3 + np.trunc(x * 0 - HALVES) * 5, ((8,),), **NO_GRAD),
    _u("around_decimals", lambda x: np.around(x, 2), **NO_GRAD),
    _u("rint", lambda x: np.rint(3 * x), **NO_GRAD),
    _u("trunc", lambda x: np.trunc(3 * x), **NO_GRAD),
    _u("fix", lambda x: np.fix(3 * x), **NO_GRAD),
    _u("round_method", lambda x: (3 * x).round(), **NO_GRAD),
    _u("nan_to_num", _quiet(lambda x: np.nan_to_num(np.log(x)) * x)),
    _u("isfinite", _quiet(lambda x: np.isfinite(np.log(x))), **NO_GRAD),
    _u("isnan", _quiet(lambda x: np.isnan(np.log(x))), **NO_GRAD),
    _u("isinf", _quiet(lambda x: np.isinf(np.log(np.abs(x) * (x > 0)))), **NO_GRAD),
]
_BINARY = [
    _b("arctan2", np.arctan2), _b("hypot", np.hypot, "away"),
    _b("logaddexp", np.logaddexp), _b("logaddexp2", np.logaddexp2),
    _b("remainder", lambda x, y: np.remainder(3 * x, y), "away", **FIRST),
    _b("mod", lambda x, y: np.mod(3 * x, y), "away", **FIRST),
    _b("mod_operator", lambda x, y: (3 * x) % y, "away", **FIRST),
    _b("fmod", lambda x, y: np.fmod(3 * x, y), "away", **FIRST),
    _b("floor_divide", lambda x, y: np.floor_divide(3 * x, y) + x, "away"),
    _b("floordiv_operator", lambda x, y: (3 * x) // y, "away", **NO_GRAD),
    _b("power_array_exponent", np.power, "positive"),
    _b("fmax", lambda x, y: np.fmax(np.where(x > 1, np.nan, x), y), "away", **FIRST),
    _b("fmin", lambda x, y: np.fmin(x, np.where(y > 1, np.nan, y)), "away", **FIRST),
    _b("true_divide", np.true_divide, "away"),
    _b("int_arithmetic", _quiet(lambda x, y: _ints(x) // _ints(y, 1) + _ints(x) % _ints(y, 1)
       - np.fmod(_ints(x), _ints(y, 1)) + _ints(x) * 3 - (_ints(x) // 0)), **NO_GRAD),
]


def _ints(x, avoid_zero=0):
    i = (x * 7).astype(np.int64)
    return np.where(i == 0, avoid_zero, i) if avoid_zero else i


_BOOLEAN = [
    _u("bool_operators", lambda x: ((x > -0.5) & (x < 0.5)) | ~(x > 1) ^ (x < -1), **NO_GRAD),
    _u("bool_mask_multiply", lambda x: x * ((x > -0.5) & (x < 0.5))),
    _b("logical_functions", lambda x, y: np.logical_and(x > 0, y > 0)
       + np.logical_or(x > 0, y < 0) * 2 + np.logical_xor(x > 0, y > 0) * 4
       + np.logical_not(x > 0) * 8, **NO_GRAD),
]
_REDUCE = [
    OpSpec("cumsum", lambda x: np.cumsum(x, axis=1), ((3, 5),)),
    OpSpec("cumsum_flat", lambda x: np.cumsum(x), ((3, 4),)),
    OpSpec("cumsum_method_axis0", lambda x: x.cumsum(axis=0), ((9, 2),)),
    OpSpec("cumprod", lambda x: np.cumprod(x, axis=-1), ((2, 6),), "positive"),
    OpSpec("cumprod_zero", lambda x: np.cumprod(x * (x > -1.5), axis=0), ((5, 2),)),
    OpSpec("diff", lambda x: np.diff(x, axis=1), ((3, 5),)),
    OpSpec("diff_n2_prepend", lambda x: np.diff(x, n=2, prepend=0.5), ((3, 5),)),
    OpSpec("var_ddof", lambda x: np.var(x, axis=0, ddof=1), ((3, 5),)),
    OpSpec("std_ddof", lambda x: np.std(x, axis=1, ddof=1, keepdims=True), ((3, 5),)),
    OpSpec("average", lambda x: np.average(x, axis=1), ((3, 5),)),
    OpSpec("average_weights", lambda x, w: np.average(x, axis=1, weights=w), ((3, 5), (5,)),
           "positive"),
    OpSpec("average_weights_full", lambda x, w: np.average(x, weights=w), ((3, 5), (3, 5)),
           "positive"),
    _u("all", lambda x: np.all(x > -1, axis=1), **NO_GRAD),
    _u("any", lambda x: np.any(x > 1, axis=0), **NO_GRAD),
    _u("all_any_methods", lambda x: (x > -2).all() | (x > 1).any(), **NO_GRAD),
    _u("count_nonzero", lambda x: np.count_nonzero(x > 0, axis=1), **NO_GRAD),
    _u("argmax", lambda x: np.argmax(x, axis=1), "distinct", **NO_GRAD),
    _u("argmin", lambda x: np.argmin(x), "distinct", **NO_GRAD),
    _u("argmax_keepdims", lambda x: x.argmax(axis=0, keepdims=True), "distinct", **NO_GRAD),
    _u("amax", lambda x: np.amax(x, axis=0), "distinct", **FIRST),
    _u("amin", lambda x: np.amin(x, axis=1, keepdims=True), "distinct", **FIRST),
    _u("ptp", lambda x: np.ptp(x, axis=1), "distinct", **FIRST),
    _u("norm", lambda x: np.linalg.norm(x)),
    _u("norm_vector_axis", lambda x: np.linalg.norm(x, axis=1, keepdims=True)),
    _u("norm_ord1", lambda x: np.linalg.norm(x, ord=1, axis=0), "away", **FIRST),
    _u("norm_ord_inf", lambda x: np.linalg.norm(x, ord=np.inf, axis=1), "distinct", **FIRST),
    _u("norm_ord3", lambda x: np.linalg.norm(x, ord=3, axis=1), "away"),
    _u("norm_ord0", lambda x: np.linalg.norm(x, ord=0, axis=1), **NO_GRAD),
    _u("norm_fro", lambda x: np.linalg.norm(x, "fro")),
    _u("norm_matrix_1", lambda x: np.linalg.norm(x, 1), "distinct", **FIRST),
    _u("norm_matrix_inf", lambda x: np.linalg.norm(x, -np.inf), "distinct", **FIRST),
    OpSpec("norm_matrix_axes", lambda x: np.linalg.norm(x, axis=(1, 2)), ((2, 3, 4),)),
]
_SHAPE = [
    OpSpec("vstack", lambda x, y: np.vstack([x, y, y[0]]), ((2, 4), (3, 4))),
    OpSpec("hstack", lambda x, y: np.hstack([x, y]), ((3, 2), (3, 4))),
    OpSpec("hstack_1d", lambda x, y: np.hstack([x, y]), ((3,), (4,))),
    OpSpec("dstack", lambda x, y: np.dstack([x, y]), ((3, 2), (3, 2))),
    OpSpec("column_stack", lambda x, y: np.column_stack([x, y]), ((3,), (3, 2))),
    OpSpec("atleast", lambda x: np.atleast_1d(x.sum()) + np.atleast_2d(x).sum()
           + np.atleast_3d(x), ((3,),)),
    OpSpec("array_split", lambda x: np.array_split(x, 3, axis=1)[2] * 2, ((2, 5),)),
    OpSpec("hsplit", lambda x: np.hsplit(x, [1, 3])[1], ((2, 5),)),
    OpSpec("vsplit", lambda x: np.vsplit(x, 2)[1], ((4, 3),)),
    OpSpec("dsplit", lambda x: np.dsplit(x, 2)[0], ((2, 2, 4),)),
    OpSpec("tile", lambda x: np.tile(x, (2, 1, 3)), ((2, 3),)),
    OpSpec("repeat", lambda x: np.repeat(x, 2, axis=1), ((2, 3),)),
    OpSpec("repeat_counts", lambda x: np.repeat(x, [1, 0, 3]), ((3,),)),
    OpSpec("roll", lambda x: np.roll(x, 2, axis=1), ((2, 5),)),
    OpSpec("roll_flat_multi", lambda x: np.roll(x, -1) + np.roll(x, (1, 2), axis=(0, 1)),
           ((3, 4),)),
    OpSpec("rollaxis", lambda x: np.rollaxis(x, 2), ((2, 3, 4),)),
    OpSpec("flip", lambda x: np.flip(x, 1) + np.flip(x), ((3, 4),)),
    OpSpec("flipud_fliplr", lambda x: np.flipud(x) * np.fliplr(x), ((3, 4),)),
    OpSpec("rot90", lambda x: np.rot90(x) @ np.rot90(x, 3).T + np.rot90(x, 2)[:1, :1],
           ((3, 4),)),
    OpSpec("pad_constant", lambda x: np.pad(x, ((1, 0), (2, 1)), constant_values=(0.5, -1)),
           ((3, 4),)),
    OpSpec("pad_zero", lambda x: np.pad(x, 1), ((3, 4),)),
    OpSpec("pad_edge", lambda x: np.pad(x, ((2, 1), (0, 3)), mode="edge"), ((3, 4),)),
    OpSpec("pad_reflect", lambda x: np.pad(x, ((2, 2), (3, 1)), mode="reflect"), ((3, 4),)),
    OpSpec("pad_symmetric_wrap", lambda x: np.pad(x, 2, mode="symmetric")
           + np.pad(x, 2, mode="wrap"), ((3, 4),)),
    OpSpec("broadcast_arrays", lambda x, y: np.broadcast_arrays(x, y)[1] * 2, ((3, 4), (4,))),
    OpSpec("meshgrid", lambda x, y: np.meshgrid(x, y)[0] * np.meshgrid(x, y)[1]
           + np.meshgrid(x, y, indexing="ij")[1].T, ((3,), (4,))),
]
_MATRIX = [
    OpSpec("tensordot", lambda a, b: np.tensordot(a, b), ((2, 3, 4), (3, 4, 2))),
    OpSpec("tensordot_axes", lambda a, b: np.tensordot(a, b, axes=([0, 2], [2, 0])),
           ((2, 3, 4), (4, 5, 2))),
    OpSpec("tensordot_outer", lambda a, b: np.tensordot(a, b, 0), ((2, 3), (2,))),
    OpSpec("inner", lambda a, b: np.inner(a, b), ((2, 4), (3, 4))),
    OpSpec("kron", lambda a, b: np.kron(a, b), ((2, 3), (3, 2))),
    OpSpec("trace", lambda x: np.trace(x) + np.trace(x, offset=1), ((3, 4),)),
    OpSpec("trace_axes", lambda x: np.trace(x, axis1=1, axis2=2), ((2, 3, 3),)),
    OpSpec("diag_vector", lambda v: np.diag(v) + np.diag(v[:2], 1)[:3, :3], ((3,),)),
    OpSpec("diag_matrix", lambda x: np.diag(x) * np.diag(x, -1).sum(), ((3, 4),)),
    OpSpec("diagonal", lambda x: np.diagonal(x, 1, 0, 2) + x.diagonal().sum(),
           ((3, 2, 4),)),
    OpSpec("tril_triu", lambda x: np.tril(x) + np.triu(x, 1) * 2 + np.tril(x, -1) * 3,
           ((2, 3, 4),)),
    OpSpec("eye_identity_constants", lambda x: x @ np.eye(4) + np.identity(3) @ x
           + np.eye(3, 4, k=1, dtype=x.dtype), ((3, 4),)),
    OpSpec("einsum_ellipsis", lambda a, b: np.einsum("...ij,...jk->...ik", a, b),
           ((2, 3, 4), (4, 2))),
    OpSpec("einsum_ellipsis_implicit", lambda a: np.einsum("i...->...", a), ((3, 2, 4),)),
    OpSpec("einsum_diagonal", lambda a: np.einsum("ii->i", a), ((3, 3),)),
    OpSpec("einsum_trace", lambda a: np.einsum("ii", a[0]) + np.einsum("bii->b", a).sum(),
           ((2, 3, 3),)),
    OpSpec("einsum_four_operands", lambda a, b, c, d: np.einsum(
        "ij,jk,kl,l->i", a, b, c, d, optimize=True), ((2, 3), (3, 4), (4, 2), (2,))),
]
_SELECT = [
    _u("sort", lambda x: np.sort(x, axis=1), "distinct"),
    _u("sort_axis0", lambda x: np.sort(x, axis=0) * np.arange(4), "distinct"),
    _u("sort_flat", lambda x: np.sort(x, axis=None), "distinct"),
    _u("argsort", lambda x: np.argsort(x, axis=1), "distinct", **NO_GRAD),
    _u("argsort_method", lambda x: x.argsort(axis=0), "distinct", **NO_GRAD),
    OpSpec("take_along_argsort", lambda x: np.take_along_axis(x, np.argsort(x, 1)[:, :2], 1),
           ((3, 4),), "distinct"),
    OpSpec("clip_array_bounds", lambda x, lo, hi: np.clip(x, lo, lo + np.abs(hi)),
           ((3, 4), (4,), (3, 1)), "distinct", **FIRST),
    _u("select", lambda x: np.select([x < -0.5, x > 0.5], [x * 2, np.sin(x)], x ** 2),
       "distinct", **FIRST),
    OpSpec("searchsorted", lambda a, v: np.searchsorted(np.sort(a), v)
           + np.searchsorted(np.sort(a), v, side="right"), ((6,), (2, 3)), "distinct",
           **NO_GRAD),
]
_LINALG = [
    OpSpec("solve", lambda a, b: np.linalg.solve(a, b), (SQ, (2, 3, 2)), "wellcond",
           tol=5e-5),
    OpSpec("solve_vector", lambda a, b: np.linalg.solve(a, b), ((3, 3), (3,)), "wellcond",
           tol=5e-5),
    OpSpec("inv", lambda a: np.linalg.inv(a), (SQ,), "wellcond", tol=5e-5),
    OpSpec("det", lambda a: np.linalg.det(a), (SQ,), "wellcond", tol=5e-5),
    OpSpec("slogdet", lambda a: np.linalg.slogdet(a)[1] * np.linalg.slogdet(a)[0], (SQ,),
           "wellcond", tol=5e-5),
    OpSpec("cholesky", lambda a: np.linalg.cholesky(a), (SQ,), "spd", tol=5e-5),
    OpSpec("cholesky_upper", lambda a: np.linalg.cholesky(a, upper=True), ((3, 3),), "spd",
           tol=5e-5),
    OpSpec("matrix_power", lambda a: np.linalg.matrix_power(a, 3)
           + np.linalg.matrix_power(a, -1), ((3, 3),), "wellcond", tol=5e-5),
    OpSpec("multi_dot", lambda a, b, c: np.linalg.multi_dot([a, b, c]),
           ((2, 3), (3, 4), (4, 2))),
]
_CREATION = [
    _u("creation_constants", lambda x: x + np.zeros(4) + np.ones((3, 4), x.dtype)
       + np.full((4,), 2.0, x.dtype) + np.arange(4, dtype=x.dtype)
       + np.linspace(0, 1, 4, dtype=x.dtype)),
    OpSpec("array_of_tracers", lambda x, y: np.array([x.sum(), y.max(), x[0]]) * y[:3],
           ((3,), (4,))),
    OpSpec("array_of_arrays", lambda x, y: np.array([x, y, x * y]).sum(0)
           + np.asarray([x, y])[1], ((2, 3), (2, 3))),
    OpSpec("linspace_traced", lambda x: np.linspace(x.min(), x.max(), 5), ((4,),),
           "distinct", **FIRST),
]

NUMPY_SPECS = _UNARY + _BINARY + _BOOLEAN + _REDUCE + _SHAPE + _MATRIX + _SELECT + _LINALG \
    + _CREATION
