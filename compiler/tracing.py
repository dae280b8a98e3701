"""Tracing: `Trace` records IR nodes; `Tracer` stands in for an array while a function runs.

A Tracer wraps one IR value (`Var`) of one Trace: its type, and errors for everything that
needs a concrete value (`if x > 0:`, `float(x)`, `x[0] = 1`), naming the user's line and
saying what to do. This is the bottom layer: compiler/primitives.py emits one node per
primitive through it, and the tracer users hold, with Python's operators and NumPy's methods
and dispatch (compiler/array_tracer.py's `ArrayTracer`), is a subclass defined above the NumPy
layer. A Trace makes the tracers of its values with its `tracer_type`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np

from compiler.errors import ShapeMismatchError, TracerConversionError, user_source
from ir import ops
from ir.graph import Graph, Node, Role, Source, Var
from ir.ops import Op
from ir.shapes import ShapeError, infer
from ir.types import TensorType

# The traces being recorded now, innermost last: the trace levels. A compiled function or a
# transformation called inside another function's trace, on constants only, records into the
# innermost one (as JAX traces nested calls at the enclosing level), so a function that
# closes over a value of the enclosing trace can be called with constants.
ACTIVE_TRACES: list[Trace] = []


@contextlib.contextmanager
def recording(trace: Trace):
    """Make `trace` the innermost trace level while the block runs."""
    ACTIVE_TRACES.append(trace)
    try:
        yield trace
    finally:
        ACTIVE_TRACES.pop()


def innermost_trace() -> Trace | None:
    return ACTIVE_TRACES[-1] if ACTIVE_TRACES else None


class Trace:
    """A growing graph: inputs, and nodes in the order the user's code produced them.

    `tracer_type`: the Tracer class its values are wrapped in (`wrap`); compiler/api.py and
    compiler/transforms.py record with `ArrayTracer` (compiler/array_tracer.py).

    A trace with a `parent` records a loop body (compiler/loops.py): a value of an enclosing
    trace used in it (a closure over parameters) is captured, becoming an input of the body
    (`captured`: outer var -> body var), so the body is a closed sub-graph."""

    def __init__(self, tracer_type: type[Tracer] | None = None,
                 parent: Trace | None = None) -> None:
        self.tracer_type = tracer_type or (parent.tracer_type if parent is not None else Tracer)
        self.inputs: list[Var] = []
        self.nodes: list[Node] = []
        self.constants: dict[tuple, Var] = {}
        # integer label values nn.cross_entropy read -> its number of classes: the runtime
        # checks them with NumPy before each call (compiled code cannot raise on a bad label)
        self.label_bounds: dict[Var, int] = {}
        # alias node of a custom_vjp output -> its record (compiler/autodiff.py's CustomVjp)
        self.custom_vjps: dict[Node, object] = {}
        self._note = ""
        self._source: Source | None = None
        self._role = Role.FORWARD
        self.parent = parent
        self.depth = 0 if parent is None else parent.depth + 1
        self.captured: dict[Var, Var] = {}
        self.local: set[Var] = set()  # vars defined here (only kept for a body)

    def new_input(self, type: TensorType, weak: bool = False) -> Tracer:
        var = Var(type)
        self.inputs.append(var)
        self.local.add(var)
        return self.wrap(var, weak)

    def wrap(self, var: Var, weak: bool = False) -> Tracer:
        """The tracer standing for `var`, a value of this trace."""
        return self.tracer_type(var, self, weak)

    def encloses(self, other: Trace) -> bool:
        """Whether `other` is this trace or a body recorded inside it."""
        while other is not None and other is not self:
            other = other.parent
        return other is self

    def lift(self, var: Var) -> Var:
        """`var` as a value of this trace: an enclosing trace's value is captured once."""
        if self.parent is None or var in self.local:
            return var
        inner = self.captured.get(var)
        if inner is None:
            inner = self.captured[var] = Var(var.type)
            self.local.add(inner)
        return inner

    def inline(self, graph: Graph, args: Sequence[Var],
               copies: dict[Var, Var] | None = None) -> list[Var]:
        """Record `graph`'s nodes again here, on `args`: its outputs' new vars (`copies`, when
        given, receives every value of `graph` -> its new var)."""
        env = copies if copies is not None else {}
        env.update(zip(graph.inputs, args))
        for node in graph.nodes:
            outputs = tuple(Var(v.type) for v in node.outputs)
            inputs = tuple(self.lift(env.get(v, v)) for v in node.inputs)
            self.nodes.append(Node(node.op, inputs, outputs, dict(node.params), node.source,
                                   self._note or node.note))
            self.local.update(outputs)
            env.update(zip(node.outputs, outputs))
        return [self.lift(env.get(v, v)) for v in graph.outputs]

    @contextlib.contextmanager
    def annotate(self, note: str, source: Source | None = None, role: Role = Role.FORWARD):
        """Label every node emitted inside the block with a note for humans, a source line and
        a role (used by transformations: autodiff emits `Role.BACKWARD` nodes)."""
        saved = self._note, self._source, self._role
        self._note, self._source, self._role = note, source, role
        try:
            yield
        finally:
            self._note, self._source, self._role = saved

    def emit(self, op: Op, inputs: Sequence[Var], params: dict | None = None) -> tuple[Var, ...]:
        params = dict(params or {})
        source = self._source or user_source()
        try:
            out_types = infer(op, [v.type for v in inputs], params)
        except ShapeError as error:
            raise ShapeMismatchError(f"{op.value}: {error}", source,
                                     fix=SHAPE_FIXES.get(op, _SHAPE_FIX)) from None
        outputs = tuple(Var(t) for t in out_types)
        if self.parent is not None:
            inputs = [self.lift(v) for v in inputs]
            self.local.update(outputs)
        self.nodes.append(Node(op, tuple(inputs), outputs, params, source, self._note,
                               self._role))
        return outputs

    def constant(self, value: np.ndarray) -> Var:
        """A CONSTANT node; small constants are shared within the trace."""
        value = np.asarray(value)
        key = None
        if value.size <= 16:
            key = (value.dtype.str, value.shape, value.tobytes())
            if key in self.constants:
                return self.constants[key]
        value = value.copy()
        value.flags.writeable = False
        with self.annotate("", self._source):
            (var,) = self.emit(Op.CONSTANT, (), {"value": value})
        if key is not None:
            self.constants[key] = var
        return var

    def to_graph(self, outputs: Sequence[Var]) -> Graph:
        return Graph(list(self.inputs), list(self.nodes), list(outputs))


_BROADCAST_FIX = ("make the trailing dimensions equal or 1: reshape an operand (x[:, None], "
                  "x.reshape(-1, 1)) or check the layer sizes; cast operands of different "
                  "dtypes with astype")
_SHAPE_FIX = "print the operands' .shape and .dtype under compile and check them"
# op -> what would fix a shape error of the op (the tracer adds it to ShapeMismatchError).
SHAPE_FIXES = {
    **{op: _BROADCAST_FIX for op in (ops.BINARY | ops.COMPARISON | {Op.WHERE, Op.BROADCAST_TO})},
    **{op: "cast the operand to a float dtype with astype(np.float32)"
       for op in ops.UNARY},
    Op.ALL_REDUCE: "all_reduce takes float32/float64 (int32/int64 for sum, max, min) arrays: "
                   "cast it with astype(np.float32)",
    Op.CONCATENATE: "every operand must have the same rank, dtype and size on each axis but "
                    "`axis`: slice, pad or reshape the operands, or concatenate along the axis "
                    "where they differ",
    Op.MATMUL: "the left operand's last axis must equal the right's second-to-last, and batch "
               "dims must match: transpose an operand (w.T, np.swapaxes) or check the sizes",
    Op.RESHAPE: "the new shape must hold as many elements as the old; use -1 for one inferred "
                "dimension",
    Op.TRANSPOSE: "give a permutation of range(x.ndim), one entry per axis",
    Op.SLICE: "use indices within the axis length",
    Op.PAD: "pad widths must be non-negative integers, one (low, high) pair per axis",
    Op.GATHER: "index with integer arrays (astype(np.int64)) on an existing axis",
    Op.SCATTER_ADD: "index with integer arrays whose shape matches the updates",
    Op.CONV2D: "x is (N, C, H, W) and w (O, C, kh, kw) with the same C and dtype: pad the "
               "input, use a smaller kernel or check the channel counts",
    **{op: "use an axis in [-x.ndim, x.ndim)" for op in ops.REDUCTION},
}

_CONTROL_FLOW_FIX = (
    "select values with np.where(cond, a, b) instead of Python `if`/`and`/`or`, or pass the "
    "value as a static argument: compile(fn, static_argnums=(i,))"
)


class Tracer:
    """An abstract array: a shape and dtype now, a value only when the compiled code runs.

    The base class the compiler's layers test for (`isinstance(x, Tracer)`); its operators
    and array methods are `ArrayTracer`'s (compiler/array_tracer.py)."""

    __slots__ = ("ir_var", "trace", "weak")
    __array_priority__ = 1000

    def __init__(self, var: Var, trace: Trace, weak: bool = False):
        self.ir_var = var
        self.trace = trace
        self.weak = weak  # a Python scalar argument: weakly typed, like NumPy's Python scalars

    # -- what the value looks like ------------------------------------------------------
    shape = property(lambda self: self.ir_var.shape)
    dtype = property(lambda self: self.ir_var.dtype)
    ndim = property(lambda self: self.ir_var.ndim)
    size = property(lambda self: self.ir_var.type.size)

    def __repr__(self) -> str:
        return f"Tracer<{self.ir_var.type}>"

    def __len__(self) -> int:
        if not self.shape:
            raise TracerConversionError("len() of a 0-d traced value")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TracerConversionError("iteration over a 0-d traced value")
        return (self[i] for i in range(self.shape[0]))

    # -- values Python needs now: explain why they are not available ---------------------
    def _concrete(self, what: str):
        raise TracerConversionError(
            f"{what} needs the concrete value of a traced array {self.ir_var.type}, which is only "
            "known when the compiled code runs",
            fix=_CONTROL_FLOW_FIX,
        )

    def __bool__(self):
        self._concrete("Python control flow (if/while/and/or/bool())")

    def __float__(self):
        self._concrete("float()")

    def __int__(self):
        self._concrete("int()")

    def __index__(self):
        self._concrete("using a traced value as a Python index or size")

    def __complex__(self):
        self._concrete("complex()")

    def __array__(self, dtype=None, copy=None):
        self._concrete("converting to a NumPy array (np.asarray, np.array, .item(), a NumPy "
                       "function chainjit does not trace)")

    def item(self):
        self._concrete(".item()")

    def tolist(self):
        self._concrete(".tolist()")

    def __setitem__(self, index, value):
        raise TracerConversionError(
            f"traced arrays are immutable: `x[...] = value` on {self.ir_var.type}",
            fix="build a new array instead: np.where(mask, new, x), np.concatenate, or "
            "x + np.pad-style updates; the function must not mutate its arguments",
        )

    def __hash__(self):
        return id(self)
