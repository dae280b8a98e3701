"""The primitive ops of the IR: one Enum, and the groups passes and codegen dispatch on.

A primitive is just a name. What an op means lives in tables keyed by `Op`: shape rules
(`ir.shapes.SHAPE_RULES`), evaluation (`ir.interpreter.EVAL_RULES`), derivatives
(`compiler.vjp_rules.VJP_RULES`) and code generation (`compiler.codegen.ops.EMIT_RULES`, and
for loop bodies the tables of compiler/codegen/loops.py). Everything richer (softmax, mean,
layer norm, einsum) is composed from these in compiler/primitives.py and the NumPy layer.
"""

from __future__ import annotations

from enum import Enum


class Op(Enum):
    # leaves
    CONSTANT = "constant"  # [value]: a NumPy array baked into the graph
    # elementwise, one operand
    NEG = "neg"
    EXP = "exp"
    LOG = "log"
    LOG1P = "log1p"
    EXPM1 = "expm1"
    SQRT = "sqrt"
    TANH = "tanh"
    LOGISTIC = "logistic"  # 1 / (1 + exp(-x)), a primitive so codegen can vectorise it
    SIN = "sin"
    COS = "cos"
    ABS = "abs"
    SIGN = "sign"
    CAST = "cast"  # [dtype]
    STOP_GRADIENT = "stop_gradient"  # identity whose derivative is zero
    # elementwise, two operands (same shape; broadcasting is explicit)
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    POW = "pow"
    MAX = "max"
    MIN = "min"
    # comparisons (bool result)
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    EQ = "eq"
    NE = "ne"
    # elementwise, three operands
    WHERE = "where"  # where(cond, x, y)
    # movement
    BROADCAST_TO = "broadcast_to"  # [shape]: numpy broadcasting of a lower- or equal-rank operand
    RESHAPE = "reshape"  # [shape]
    TRANSPOSE = "transpose"  # [perm]
    SLICE = "slice"  # [starts, stops, steps], steps > 0
    PAD = "pad"  # [lows, highs, interiors]: zeros around and between elements (slice's adjoint)
    CONCATENATE = "concatenate"  # [axis], any number of operands
    # reductions
    REDUCE_SUM = "reduce_sum"  # [axes]
    REDUCE_MAX = "reduce_max"  # [axes]
    REDUCE_PROD = "reduce_prod"  # [axes]
    # indexing
    GATHER = "gather"  # [axis]: np.take(x, idx, axis)
    SCATTER_ADD = "scatter_add"  # [axis, size]: adjoint of gather, zeros then np.add.at
    # contraction
    MATMUL = "matmul"  # (..., m, k) @ (..., k, n) with equal batch dims
    CONV2D = "conv2d"  # [strides, padding, dilation]: NCHW cross-correlation, w (O, C, kh, kw)
    # [alpha beta]: a b x [t] -> alpha [t] (a @ b) + beta x, 2-D, t 0-d: one accumulating BLAS
    # call; made after autodiff, by compiler/passes/gemm_epilogue.py
    GEMM = "gemm"
    # random numbers: counter-based, a pure function of (key, element index)
    RANDOM_UNIFORM = "random_uniform"  # [shape, dtype]: key i64[] -> uniform [0, 1)
    # library ops: one call per node (libm, a sort, LAPACK through Numba's np.linalg), never
    # fused; elementwise ones take operands of one shape, as ADD does
    ATAN2 = "atan2"  # np.arctan2(y, x): no exact composition from the other primitives
    FMOD = "fmod"  # np.fmod(x, y) (C's remainder, sign of x); x - trunc(x/y) y is inexact
    ARGSORT = "argsort"  # stable argsort along the last axis -> i64 (sort gathers through it)
    SOLVE = "solve"  # np.linalg.solve(a (..., n, n), b (..., n, k)) with equal batch dims
    SLOGDET = "slogdet"  # a (..., n, n) -> (..., 2): [sign, log|det|] of np.linalg.slogdet
    CHOLESKY = "cholesky"  # np.linalg.cholesky: lower L, L Lᵀ = a (reads a's lower triangle)
    # collectives across the ranks of a data-parallel job (runtime/execution/distributed.py)
    ALL_REDUCE = "all_reduce"  # [reduction, shapes]: x summed (...) over ranks, cut into shapes
    # a fused kernel: [body] is a sub-graph (see compiler/passes)
    FUSED = "fused"
    # structured loops (compiler/loops.py): the body is a sub-graph, run once per step
    SCAN = "scan"  # [body num_consts num_carry length reverse]: consts init xs -> carry ys
    WHILE = "while"  # [cond body num_cond_consts]: cond_consts body_consts init -> carry

    def __repr__(self) -> str:
        return f"Op.{self.name}"


UNARY = frozenset(
    {Op.NEG, Op.EXP, Op.LOG, Op.LOG1P, Op.EXPM1, Op.SQRT, Op.TANH, Op.LOGISTIC, Op.SIN, Op.COS,
     Op.ABS, Op.SIGN, Op.CAST, Op.STOP_GRADIENT}
)
BINARY = frozenset({Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.POW, Op.MAX, Op.MIN})
COMPARISON = frozenset({Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE})
ELEMENTWISE = UNARY | BINARY | COMPARISON | {Op.WHERE}
REDUCTION = frozenset({Op.REDUCE_SUM, Op.REDUCE_MAX, Op.REDUCE_PROD})
MOVEMENT = frozenset(
    {Op.BROADCAST_TO, Op.RESHAPE, Op.TRANSPOSE, Op.SLICE, Op.PAD, Op.CONCATENATE}
)
INDEXING = frozenset({Op.GATHER, Op.SCATTER_ADD})
CONTRACTION = frozenset({Op.MATMUL, Op.GEMM, Op.CONV2D})
LIBRARY = frozenset({Op.ATAN2, Op.FMOD, Op.ARGSORT, Op.SOLVE, Op.SLOGDET, Op.CHOLESKY})
COLLECTIVE = frozenset({Op.ALL_REDUCE})
OTHER = frozenset({Op.CONSTANT, Op.RANDOM_UNIFORM, Op.FUSED})
LOOPS = frozenset({Op.SCAN, Op.WHILE})

# Every op belongs to exactly one group (tests/ir/test_ir.py checks it).
GROUPS = {
    "elementwise": ELEMENTWISE,
    "reduction": REDUCTION,
    "movement": MOVEMENT,
    "indexing": INDEXING,
    "contraction": CONTRACTION,
    "library": LIBRARY,
    "collective": COLLECTIVE,
    "other": OTHER,
    "loops": LOOPS,
}


class KernelKind(str, Enum):
    """What a FUSED node's body is (`params["kind"]`): the passes that make FUSED nodes set it,
    codegen dispatches on it. A str Enum, so printouts show ``kind=loop`` as before."""

    LOOP = "loop"  # elementwise work over one iteration shape (compiler/passes/fuse.py)
    REDUCE = "reduce"  # a loop nest that also sums or maximises over some axes (fuse.py)

    __hash__ = str.__hash__  # equal to its string, so hashed as it (sets, dict keys)

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)
