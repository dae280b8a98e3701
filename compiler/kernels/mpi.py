"""MPI_Allreduce from compiled code: the kernel behind `compiler.all_reduce`'s emitted call
(compiler/codegen/extra_ops.py), so a data-parallel step's gradients are summed inside its
one compiled call.

The kernel is cached on disk and loaded by other processes, so it names no address and no MPI
handle: it calls the symbol ``chainjit_MPI_Allreduce_h<bits>`` and reads the communicator,
datatypes, ops and MPI_IN_PLACE from the table ``chainjit_mpi_handles``; `bind` registers both
(llvmlite's add_symbol, as runtime/execution/linking.py does for kernels) when this module is
imported, before Numba compiles or loads any code that names them. Without MPI (one rank) the table
says size 1 and the kernel returns at once; the symbol is then a stub never called.

While it waits in MPI_Allreduce the kernel releases the GIL (when its thread holds it), so
the watchdog of runtime/execution/distributed.py can end a job whose ranks do not all arrive. MPI's
return code is checked (mpi4py sets MPI_ERRORS_RETURN).
"""

from __future__ import annotations

import ctypes

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir as llir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from runtime.execution import distributed

TABLE = "chainjit_mpi_handles"
ALLREDUCE = "chainjit_MPI_Allreduce_h"  # + handle bits: 32 (MPICH) or 64 (Open MPI)
# slots of the table (int64 each): what runtime.execution.distributed.World.handles() returns
SLOTS = ("size", "handle_bytes", "comm", "in_place", "sum", "max", "min",
         "float32", "float64", "int32", "int64")
SLOT = {name: i for i, name in enumerate(SLOTS)}
OP_CODES = {"sum": 0, "mean": 1, "max": 2, "min": 3}  # the kernel's `op` argument
_OP_SLOTS = (SLOT["sum"], SLOT["sum"], SLOT["max"], SLOT["min"])
_SIZE = SLOT["size"]

_TABLE = np.zeros(16, np.int64)  # lives as long as the process: compiled code reads it
_STUB = ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 1)  # never called: size is 1 without MPI


def bind() -> None:
    """Fill the handle table and register the table and MPI_Allreduce for LLVM's linker."""
    world = distributed.world()
    for name, value in world.handles().items():
        _TABLE[SLOT[name]] = ctypes.c_int64(value).value  # handles may be unsigned
    address = world.allreduce_address() or ctypes.cast(_STUB, ctypes.c_void_p).value
    llvm.add_symbol(TABLE, _TABLE.ctypes.data)
    for bits in (32, 64):
        llvm.add_symbol(f"{ALLREDUCE}{bits}", address)


bind()

_I8P = llir.IntType(8).as_pointer()
_I32, _I64 = llir.IntType(32), llir.IntType(64)


def _table_slot(builder, slot):
    module = builder.module
    try:
        table = module.get_global(TABLE)
    except KeyError:
        table = llir.GlobalVariable(module, llir.ArrayType(_I64, len(_TABLE)), TABLE)
        table.linkage = "external"  # a declaration: the address comes from bind()
    return builder.load(builder.gep(table, [_I32(0), slot]))


@intrinsic
def table_slot(typingctx, slot):
    """The table's int64 at `slot` (read at run time: never a compile-time constant)."""

    def codegen(context, builder, signature, args):
        return _table_slot(builder, builder.trunc(args[0], _I32) if args[0].type != _I32
                           else args[0])

    return types.int64(slot), codegen


@intrinsic
def allreduce_in_place(typingctx, buffer, op):
    """MPI_Allreduce(MPI_IN_PLACE, buffer, buffer.size, <buffer's datatype>, op, comm) with
    the GIL released while it waits; MPI's return code."""
    dtype_slot = SLOT[str(buffer.dtype)]

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        data = builder.bitcast(array.data, _I8P)
        count = builder.trunc(array.nitems, _I32)
        slots = cgutils.create_constant_array(_I32, [_I32(s) for s in _OP_SLOTS])
        slots_ptr = cgutils.alloca_once_value(builder, slots)
        op_index = builder.trunc(args[1], _I32)
        op_slot = builder.load(builder.gep(slots_ptr, [_I32(0), op_index]))
        in_place = builder.inttoptr(_table_slot(builder, _I32(SLOT["in_place"])), _I8P)
        handles = [_table_slot(builder, _I32(dtype_slot)), _table_slot(builder, op_slot),
                   _table_slot(builder, _I32(SLOT["comm"]))]
        has_gil = builder.call(_function(builder, "PyGILState_Check", _I32, []), [])
        holds = builder.icmp_signed("!=", has_gil, _I32(0))
        state = cgutils.alloca_once_value(builder, llir.Constant(_I8P, None))
        with builder.if_then(holds):
            saved = builder.call(_function(builder, "PyEval_SaveThread", _I8P, []), [])
            builder.store(saved, state)
        result = cgutils.alloca_once(builder, _I32)
        bytes_ = _table_slot(builder, _I32(SLOT["handle_bytes"]))
        with builder.if_else(builder.icmp_signed("==", bytes_, _I64(4))) as (small, large):
            for bits, block in ((32, small), (64, large)):
                with block:
                    kind = llir.IntType(bits)
                    fn = _function(builder, f"{ALLREDUCE}{bits}", _I32,
                                   [_I8P, _I8P, _I32, kind, kind, kind])
                    args_ = [in_place, data, count,
                             *(builder.trunc(h, kind) if bits == 32 else h for h in handles)]
                    builder.store(builder.call(fn, args_), result)
        with builder.if_then(holds):
            restore = _function(builder, "PyEval_RestoreThread", llir.VoidType(), [_I8P])
            builder.call(restore, [builder.load(state)])
        return builder.sext(builder.load(result), _I64)

    return types.int64(buffer, op), codegen


def _function(builder, name: str, returns, args):
    return cgutils.get_or_insert_function(builder.module, llir.FunctionType(returns, args), name)


_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@numba.njit(**_JIT)
def mpi_pack(out, offset, x):
    """out[offset : offset + x.size] = x (1-d)."""
    for i in range(x.size):
        out[offset + i] = x[i]


@numba.njit(**_JIT)
def mpi_allreduce(buffer, op):
    """`buffer` (1-d, C-contiguous) reduced in place across ranks: op is OP_CODES' sum,
    mean, max or min. Returns at once in one process."""
    size = table_slot(_SIZE)
    if size == 1:
        return
    if buffer.size > 2147483647:
        raise ValueError("all_reduce: more than 2**31 - 1 elements in one buffer (MPI's count)")
    code = allreduce_in_place(buffer, op)
    if code != 0:
        raise RuntimeError("all_reduce: MPI_Allreduce returned an error code (compiled step)")
    if op == 1:  # mean: in float64 then rounded, as World.allreduce (the interpreter) does
        for i in range(buffer.size):
            buffer[i] = buffer[i] / size
