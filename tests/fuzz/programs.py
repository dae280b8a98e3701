"""Random user-level NumPy programs for differential fuzzing, as hypothesis strategies.

`programs()` draws a `Program`: the source text of a plain NumPy function `f(a, b, ...)`
(what a user would write: elementwise maths, broadcasting with size-1 dims, reductions with
axis/keepdims, views, slicing with steps, integer and array indexing, take, concatenate /
stack / split, 1-D, 2-D and batched matmul, einsum, where/clip, casts, scan and fori_loop
with a smooth body), its inputs (float32
or float64, drawn from a seeded generator) and the cotangent and directions the gradient
checks use. Each statement is run eagerly while it is drawn, so the generator knows every
intermediate's shape and values: it keeps log/sqrt/divide in their domains, and keeps
non-smooth ops (abs, max, where, clip, comparisons) away from their kinks, so that central
finite differences are a fair reference. Shrinking (fewer statements, simpler choices, seed
0) gives a minimal program that prints as a readable function.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from compiler import fori_loop, nn, scan

NAMESPACE = {"np": np, "nn": nn, "scan": scan, "fori_loop": fori_loop}  # what programs see
MARGIN = 1e-2  # distance from a kink (abs at 0, max at a tie, where at its threshold)
UNARY = ["np.sin({})", "np.cos({})", "np.tanh({})", "np.negative({})", "np.square({})",
         "np.log({0} * {0} + 1.0)", "np.sqrt({0} * {0} + 0.5)", "({} ** 3)", "({} ** 2)",
         "np.exp({})", "np.abs({})", "nn.sigmoid({})", "nn.relu({})", "(1.0 / (1.0 + {0} * {0}))",
         "np.expm1({})", "np.log1p({0} * {0})", "(2.5 * {})", "({} - 0.5)", "np.reciprocal({})",
         "np.log({})", "np.sqrt({})", "({} ** 0.0)", "({} ** 1.5)"]
BINARY = ["({} + {})", "({} - {})", "({} * {})", "({} / {})", "np.maximum({}, {})",
          "np.minimum({}, {})", "np.add({}, {})", "np.multiply({}, {})"]
# Functions NumPy users reach for that chainjit may not trace yet: a program using one is
# counted as a skip under the function's name (never a failure).
MAYBE_UNSUPPORTED = ["np.flip({}, axis=0)", "np.cumsum({}, axis=0)", "np.roll({}, 1, axis=0)",
                     "np.tile({}, 2)", "np.repeat({}, 2, axis=0)", "np.diff({}, axis=0)",
                     "np.sort({}, axis=0)"]


@dataclass
class Program:
    """A NumPy function as source text, with everything a check needs to run it."""

    source: str
    inputs: list[np.ndarray]
    cotangent: np.ndarray  # the output's cotangent (a fixed random weighting of the output)
    direction: list[np.ndarray]  # a random direction per input (finite differences)
    hvp: bool  # also check grad of grad (a Hessian-vector product)
    hvp_weights: np.ndarray | None = None  # weights of the first gradient in the HVP
    names: list[str] = field(default_factory=list)

    @property
    def dtype(self) -> np.dtype:
        """The least precise float dtype the program computes in (its tolerance's)."""
        if any(x.dtype == np.float32 for x in self.inputs) or "float32" in self.source:
            return np.dtype(np.float32)
        return np.dtype(np.float64)

    def function(self):
        """The program as a Python function (compiled from its source)."""
        namespace = dict(NAMESPACE)
        exec(compile(self.source, "<fuzz program>", "exec"), namespace)  # noqa: S102
        return namespace["f"]

    def __str__(self) -> str:
        shapes = ", ".join(f"{n}: {x.dtype}{list(x.shape)}" for n, x in zip(self.names,
                                                                              self.inputs))
        return f"{self.source}# inputs {shapes}"


class _Builder:
    """The program being drawn: named values (evaluated eagerly) and source lines."""

    def __init__(self, draw, rng, dtype):
        self.draw, self.rng, self.dtype = draw, rng, np.dtype(dtype)
        self.env: dict[str, np.ndarray] = {}
        self.lines: list[str] = []
        self.count = 0

    def pick(self, options):
        return self.draw(st.sampled_from(options))

    def floats(self) -> list[str]:
        return [n for n, v in self.env.items() if v.dtype.kind == "f"]

    def var(self, pred=lambda v: True) -> str | None:
        names = [n for n in self.floats() if pred(self.env[n])]
        if not names:
            return None
        if self.draw(st.integers(0, 2)) < 2:  # mostly the newest value: programs chain
            return names[-1]
        return self.pick(names)

    def literal(self, value: np.ndarray) -> str:
        value = np.round(np.asarray(value, np.float64), 2)
        return f"np.array({value.tolist()!r}, dtype=np.{self.dtype.name})"

    def constant(self, shape) -> str:
        return self.literal(self.rng.normal(size=shape))

    def add(self, expr: str) -> bool:
        """Evaluate `expr` eagerly; keep it as a new statement when its values are tame."""
        try:
            with np.errstate(all="raise"):
                value = eval(expr, dict(NAMESPACE), dict(self.env))  # noqa: S307
        except (FloatingPointError, ValueError, IndexError, TypeError):
            return False
        value = np.asarray(value)
        if value.dtype.kind == "f" and (value.size == 0 or not np.all(np.isfinite(value))
                                        or np.abs(value).max() > 1e3):
            return False
        if value.dtype.kind not in "fb" or value.ndim > 4 or value.size > 200:
            return False
        name = "v" + str(self.count)
        self.count += 1
        self.lines.append(f"    {name} = {expr}")
        self.env[name] = value
        return True


def _far_from(x: np.ndarray, at: float = 0.0) -> bool:
    return bool(np.all(np.abs(x - at) > MARGIN))


def _unary(b: _Builder) -> str | None:
    name = b.var()
    if name is None:
        return None
    x = b.env[name]
    form = b.pick(UNARY)
    if "np.exp(" in form and np.abs(x).max() > 5:
        form = "np.tanh({})"
    if form in ("np.abs({})", "nn.relu({})", "np.reciprocal({})") and not _far_from(x):
        return None
    if form in ("np.log({})", "np.sqrt({})", "({} ** 1.5)") and not np.all(x > 0.1):
        return None
    if form == "np.reciprocal({})" and np.abs(x).min() < 0.3:
        return None
    return form.format(name)


def _broadcast_partner(b: _Builder, shape) -> str:
    """Something that broadcasts against `shape`: a value, a scalar or a constant with
    size-1 dims and fewer axes."""
    same = [n for n in b.floats() if _broadcasts(b.env[n].shape, shape)]
    kind = b.pick(["value", "value", "scalar", "constant", "grow", "ints"])
    if kind == "value" and same:
        return b.pick(same)
    if kind == "scalar":
        return repr(b.pick([0.5, -1.5, 2.0, 3]))
    if kind == "ints":  # an integer array: float32 * int64 is float64, as in NumPy
        return f"np.arange({int(np.prod(shape[-1:]))}).reshape({shape[-1:]!r})" if shape \
            else "np.int64(2)"
    if kind == "grow" and 1 in shape:  # (2, 1) with (1, 3): both operands broadcast
        grown = tuple(b.draw(st.integers(2, 3)) if d == 1 else 1 for d in shape)
        return b.constant(grown)
    lead = b.draw(st.integers(0, len(shape)))
    sub = tuple(d if b.draw(st.booleans()) else 1 for d in shape[lead:])
    return b.constant(sub)


def _softmax(b: _Builder) -> str | None:
    name = b.var(lambda v: v.ndim >= 1)
    if name is None:
        return None
    x = b.env[name]
    axis = b.draw(st.integers(-x.ndim, x.ndim - 1))
    form = b.pick(["nn.softmax({}, axis={})", "nn.log_softmax({}, axis={})",
                   "nn.logsumexp({}, axis={})", "({0} - np.max({0}, axis={1}, keepdims=True))",
                   "({0} / np.sum({0} * {0} + 1.0, axis={1}, keepdims=True))"])
    if "np.max" in form and _tied(x, (axis % x.ndim,)):
        return None
    return form.format(name, axis)


def _count(b: _Builder) -> str | None:
    """Integer results: a count of booleans (int64), used as a float factor."""
    name = b.var(lambda v: v.ndim >= 1)
    if name is None or not _far_from(b.env[name]):
        return None
    return f"(np.sum({name} > 0, axis=0) + 1.0) * {name}"


def _broadcasts(source, target) -> bool:
    try:
        return np.broadcast_shapes(source, target) == tuple(target)
    except ValueError:
        return False


def _binary(b: _Builder) -> str | None:
    name = b.var()
    if name is None:
        return None
    x = b.env[name]
    y = _broadcast_partner(b, x.shape)
    form = b.pick(BINARY)
    pair = [name, y] if b.draw(st.booleans()) else [y, name]
    if form == "({} / {})":
        try:
            denominator = eval(pair[1], {"np": np}, b.env)  # noqa: S307
        except Exception:  # noqa: BLE001
            return None
        if np.abs(denominator).min() < 0.3:
            pair[1] = f"(1.0 + {pair[1]} * {pair[1]})"
    if form.startswith(("np.maximum", "np.minimum")):
        values = [eval(p, {"np": np}, b.env) for p in pair]  # noqa: S307
        if not _far_from(np.subtract(*np.broadcast_arrays(*values))):
            return None
    return form.format(*pair)


def _reduction(b: _Builder) -> str | None:
    name = b.var(lambda v: v.ndim >= 1)
    if name is None:
        return None
    x = b.env[name]
    fn = b.pick(["sum", "mean", "max", "min", "prod", "var"])
    axis = b.pick([None, "int", "neg", "tuple"]) if x.ndim > 1 else b.pick([None, "int"])
    if axis == "int":
        axis = b.draw(st.integers(0, x.ndim - 1))
    elif axis == "neg":
        axis = -1
    elif axis == "tuple":
        axis = tuple(sorted(b.draw(st.sets(st.integers(0, x.ndim - 1), min_size=1))))
    keepdims = b.draw(st.booleans())
    if fn in ("max", "min") and _tied(x, _axes(axis, x.ndim)):
        return None  # tied extremes: the derivative is a convention, not a limit
    if fn == "prod" and np.size(x) > 12:
        fn = "sum"
    style = b.pick(["function", "method"])
    args = f"axis={axis!r}" + (", keepdims=True" if keepdims else "")
    return f"np.{fn}({name}, {args})" if style == "function" else f"{name}.{fn}({args})"


def _tied(x: np.ndarray, axes: tuple[int, ...]) -> bool:
    """Whether two reduced elements of one output position are within MARGIN of each other."""
    kept = [d for k, d in enumerate(x.shape) if k not in axes]
    moved = np.moveaxis(x, axes, tuple(range(x.ndim - len(axes), x.ndim)))
    ordered = np.sort(moved.reshape(kept + [-1]), axis=-1)
    return ordered.shape[-1] > 1 and float(np.min(np.diff(ordered, axis=-1))) < MARGIN


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in ((axis,) if isinstance(axis, int) else axis))


def _movement(b: _Builder) -> str | None:
    name = b.var(lambda v: v.ndim >= 1)
    if name is None:
        return None
    x = b.env[name]
    kind = b.pick(["reshape", "reshape", "transpose", "T", "axes=", "swapaxes", "expand_dims",
                   "squeeze", "moveaxis", "ravel", "view_reshape"])
    if kind == "reshape":
        shape = _factor(b, x.size)
        if b.draw(st.booleans()) and len(shape) > 1:
            shape[b.draw(st.integers(0, len(shape) - 1))] = -1
        return f"{name}.reshape({tuple(shape)!r})"
    if kind == "ravel":
        return f"np.ravel({name})"
    if kind == "view_reshape" and x.ndim >= 2:  # a reshape of a transposed or strided view
        view = b.pick([f"{name}.T", f"{name}[::-1]", f"np.swapaxes({name}, 0, -1)"])
        return f"{view}.reshape(-1)"
    if kind == "T":
        return f"{name}.T"
    perm = tuple(b.draw(st.permutations(range(x.ndim))))
    if kind == "transpose":
        return f"np.transpose({name}, {perm!r})"
    if kind == "axes=":
        return f"np.transpose({name}, axes={perm!r})"
    if kind == "swapaxes":
        return f"np.swapaxes({name}, {perm[0] - x.ndim}, {perm[-1]})"
    if kind == "moveaxis":
        return f"np.moveaxis({name}, {perm[0]}, {perm[-1] - x.ndim})"
    if kind == "expand_dims":
        return f"np.expand_dims({name}, {b.draw(st.integers(-x.ndim - 1, x.ndim))})"
    ones = [k for k, d in enumerate(x.shape) if d == 1]
    if not ones:
        return f"np.expand_dims({name}, 0)"
    return f"np.squeeze({name}, axis={b.pick(ones)})" if b.draw(st.booleans()) \
        else f"{name}.squeeze()"


def _factor(b: _Builder, size: int) -> list[int]:
    dims, rest = [], size
    for _ in range(b.draw(st.integers(0, 2))):
        divisors = [d for d in range(1, rest + 1) if rest % d == 0]
        d = b.pick(divisors)
        dims.append(d)
        rest //= d
    return dims + [rest]


def _slicing(b: _Builder) -> str | None:
    name = b.var(lambda v: v.ndim >= 1)
    if name is None:
        return None
    x = b.env[name]
    parts = []
    for dim in x.shape:
        kind = b.pick(["all", "range", "step", "reverse", "int", "none", "negstep"])
        if kind == "all":
            parts.append(":")
        elif kind == "range":
            lo = b.draw(st.integers(0, dim - 1))
            parts.append(f"{lo}:{b.draw(st.integers(lo + 1, dim))}")
        elif kind == "step":
            parts.append(f"{b.draw(st.integers(0, dim - 1))}::{b.draw(st.integers(1, 3))}")
        elif kind == "reverse":
            parts.append("::-1")
        elif kind == "negstep":
            parts.append(f"{b.draw(st.integers(0, dim - 1))}::-{b.draw(st.integers(1, 2))}")
        elif kind == "none":
            parts.append("None, :")
        else:
            parts.append(str(b.draw(st.integers(-dim, dim - 1))))
    if b.draw(st.booleans()) and len(parts) > 1:  # an Ellipsis for the leading axes
        parts = ["..."] + parts[b.draw(st.integers(1, len(parts) - 1)):]
    return f"{name}[{', '.join(parts)}]"


def _indexing(b: _Builder) -> str | None:
    name = b.var(lambda v: v.ndim >= 1)
    if name is None:
        return None
    x = b.env[name]
    axis = b.draw(st.integers(0, x.ndim - 1))
    n = b.draw(st.integers(1, 4))
    idx = [int(i) for i in b.rng.integers(-x.shape[axis], x.shape[axis], n)]
    kind = b.pick(["array", "take", "mixed", "pair", "mask"])
    if kind == "take":
        return f"np.take({name}, {idx!r}, axis={axis})"
    if kind == "mask" and x.ndim >= 1:
        mask = [bool(v) for v in b.rng.integers(0, 2, x.shape[0])]
        return f"{name}[np.array({mask!r})]"
    parts = [":"] * x.ndim
    parts[axis] = repr(idx)
    if kind == "mixed" and x.ndim >= 2:  # an integer beside the array, maybe a slice between
        other = (axis + b.draw(st.integers(1, x.ndim - 1))) % x.ndim
        parts[other] = str(b.draw(st.integers(-x.shape[other], x.shape[other] - 1)))
    if kind == "pair" and x.ndim >= 2:
        other = (axis + 1) % x.ndim
        parts[other] = repr([int(i) for i in b.rng.integers(0, x.shape[other], n)])
    return f"{name}[{', '.join(parts)}]"


def _joining(b: _Builder) -> str | None:
    name = b.var(lambda v: v.ndim >= 1)
    if name is None:
        return None
    x = b.env[name]
    axis = b.draw(st.integers(0, x.ndim - 1))
    kind = b.pick(["concat", "concat_unequal", "stack", "split", "split_at"])
    if kind == "concat":
        partners = [n for n in b.floats() if b.env[n].shape == x.shape]
        return f"np.concatenate([{name}, {b.pick(partners)}], axis={axis})"
    if kind == "concat_unequal":
        cut = b.draw(st.integers(1, x.shape[axis]))
        part = "[" + ", ".join([":"] * axis + [f":{cut}"]) + "]"
        return f"np.concatenate([{name}{part}, np.sin({name})], axis={axis - x.ndim})"
    if kind == "stack":
        partners = [n for n in b.floats() if b.env[n].shape == x.shape]
        at = b.draw(st.integers(0, x.ndim))
        return f"np.stack([{name}, {b.pick(partners)}, {name}], axis={at})"
    dim = x.shape[axis]
    if kind == "split":
        sections = b.pick([d for d in range(1, dim + 1) if dim % d == 0])
        piece = b.draw(st.integers(0, sections - 1))
        return f"np.split({name}, {sections}, axis={axis})[{piece}]"
    at = sorted(b.draw(st.sets(st.integers(1, max(dim - 1, 1)), max_size=2)))
    pieces = f"np.split({name}, {at!r}, axis={axis})"
    return f"np.concatenate({pieces}[::-1], axis={axis})"


def _contraction(b: _Builder) -> str | None:
    name = b.var(lambda v: 1 <= v.ndim <= 3)
    if name is None:
        return None
    x = b.env[name]
    kind = b.pick(["matmul", "matmul", "dot", "einsum", "self"])
    k = x.shape[-1]
    if kind == "self":
        if x.ndim == 1:
            return f"({name} @ {name})"
        return f"({name} @ np.swapaxes({name}, -1, -2))"
    if kind == "einsum":
        forms = {1: ["i,i->", "i,ij->j", "i->"], 2: ["ij,jk->ik", "ij->ji", "ij,ij->i", "ij->"],
                 3: ["bij,bjk->bik", "bij->bj", "bij,bkj->bik"]}[x.ndim]
        spec = b.pick(forms)
        if "," not in spec:
            return f"np.einsum({spec!r}, {name})"
        left, right = spec.split("->")[0].split(",")
        sizes = dict(zip(left, x.shape))
        shape = tuple(sizes.get(c, b.draw(st.integers(1, 3))) for c in right)
        return f"np.einsum({spec!r}, {name}, {b.constant(shape)})"
    right_ndim = b.pick([1, 2] + ([x.ndim] if x.ndim == 3 else []))
    n = b.draw(st.integers(1, 3))
    shape = (k,) if right_ndim == 1 else (k, n) if right_ndim == 2 else (x.shape[0], k, n)
    w = b.var(lambda v: v.shape == shape) if b.draw(st.booleans()) else None
    w = w or b.constant(shape)
    if kind == "dot" and x.ndim <= 2:
        return f"np.dot({name}, {w})"
    if x.ndim == 2 and b.draw(st.booleans()):  # a transposed left operand
        return f"({name}.T @ {b.constant((x.shape[0], n))})"
    return f"({name} @ {w})" if b.draw(st.booleans()) else f"np.matmul({w}, {name}.T)" \
        if x.ndim == 2 and right_ndim == 2 and shape[0] == shape[1] else f"({name} @ {w})"


def _select(b: _Builder) -> str | None:
    name = b.var()
    if name is None:
        return None
    x = b.env[name]
    c = b.pick([0.0, 0.5, -0.5])
    if not _far_from(x, c):
        return None
    kind = b.pick(["where", "clip", "mask"])
    if kind == "where":
        y = _broadcast_partner(b, x.shape)
        return f"np.where({name} > {c}, {name}, {y})"
    if kind == "mask":
        return f"({name} < {c}).astype({name}.dtype) * {name}"
    hi = c + 1.0
    if not _far_from(x, hi):
        return None
    return f"np.clip({name}, {c}, {hi})"


def _loop(b: _Builder) -> str | None:
    """A structured loop with a smooth body: a fori_loop whose body closes over a constant of
    the carry's dtype, or a scan over a value's leading axis (ys stacked, or the carry)."""
    name = b.var(lambda v: v.dtype == b.dtype)
    if name is None:
        return None
    x = b.env[name]
    if x.ndim == 0 or b.draw(st.booleans()):
        shift = b.constant(x.shape[b.draw(st.integers(0, x.ndim)):])
        steps = b.draw(st.integers(0, 3))
        return f"fori_loop(0, {steps}, lambda i, c: np.tanh(c * 0.5 + {shift}), {name})"
    result = b.pick(["[0]", "[1]"])  # the final carry (a row) or the ys (x's shape)
    reverse = b.pick(["", ", reverse=True"])
    return (f"scan(lambda c, r: (np.tanh(c + r), c * r), {name}[0] * 0.5, {name}"
            f"{reverse}){result}")


def _cast(b: _Builder) -> str | None:
    name = b.var()
    if name is None:
        return None
    other = "float64" if b.env[name].dtype == np.float32 else "float32"
    return f"{name}.astype(np.{other})"


def _maybe_unsupported(b: _Builder) -> str | None:
    name = b.var(lambda v: v.ndim >= 1)
    return None if name is None else b.pick(MAYBE_UNSUPPORTED).format(name)


STATEMENTS = {
    "unary": _unary, "binary": _binary, "reduction": _reduction, "movement": _movement,
    "slicing": _slicing, "indexing": _indexing, "joining": _joining,
    "contraction": _contraction, "select": _select, "cast": _cast, "softmax": _softmax,
    "count": _count, "loop": _loop,
    "unsupported": _maybe_unsupported,
}
# How often each kind is drawn (the sampled list repeats the common ones).
KINDS = (["unary"] * 4 + ["binary"] * 4 + ["reduction"] * 2 + ["movement"] * 3
         + ["slicing"] * 2 + ["indexing"] * 2 + ["joining"] * 2 + ["contraction"] * 2
         + ["select", "cast", "softmax", "count", "loop"] + ["unsupported"])
SHAPES = [(), (3,), (4,), (2, 3), (3, 3), (1, 3), (2, 1), (3, 4), (2, 2, 3), (2, 3, 1),
          (1, 2, 2), (2, 1, 3, 2)]


@st.composite
def programs(draw, max_statements: int = 6, hvp_rate: float = 0.3) -> Program:
    """A random NumPy program over 1-3 float inputs of one dtype."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    b = _Builder(draw, rng, dtype)
    count = draw(st.integers(1, 3))
    names = list("abc")[:count]
    for name in names:
        b.env[name] = rng.normal(size=draw(st.sampled_from(SHAPES))).astype(dtype)
    inputs = [b.env[n] for n in names]
    length = draw(st.integers(1, max_statements))
    attempts = 0
    while len(b.lines) < length and attempts < 4 * max_statements:
        attempts += 1
        expr = STATEMENTS[draw(st.sampled_from(KINDS))](b)
        if expr is not None:
            b.add(expr)
    last = list(b.env)[-1]
    if b.env[last].dtype.kind != "f" or last in names:
        b.add(f"np.tanh({last})" if b.env[last].dtype.kind == "f"
              else f"{last}.astype(np.{np.dtype(dtype).name})")
        last = list(b.env)[-1]
    source = f"def f({', '.join(names)}):\n" + "\n".join(b.lines) + f"\n    return {last}\n"
    out = b.env[last]
    cotangent = rng.normal(size=out.shape).astype(out.dtype)
    direction = [rng.normal(size=x.shape) for x in inputs]
    hvp = draw(st.floats(0, 1)) < hvp_rate
    hvp_weights = rng.normal(size=inputs[0].shape) if hvp else None
    return Program(source, inputs, cotangent, direction, hvp, hvp_weights, names)


def program_from(source: str, shapes, dtype=np.float64, hvp: bool = True,
                 seed: int = 0) -> Program:
    """A Program from source text (a regression test's, or a shrunk failure's) and input
    shapes; the values, cotangent and directions come from `seed`."""
    rng = np.random.default_rng(seed)
    inputs = [rng.normal(size=shape).astype(dtype) for shape in shapes]
    names = list("abcdefgh")[: len(shapes)]
    program = Program(source, inputs, np.zeros(()), [rng.normal(size=s) for s in shapes], hvp,
                      rng.normal(size=shapes[0]) if hvp else None, names)
    with np.errstate(all="ignore"):
        out = np.asarray(program.function()(*inputs))
    program.cotangent = rng.normal(size=out.shape).astype(out.dtype)
    return program
