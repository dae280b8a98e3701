"""Compiled executables: argument checks, work buffers, and the lean per-call path.

compiler/backend.py builds an `Executable` from a generated module it loads through the cache
(runtime/execution/cache.py); this module knows nothing of the compiler. Called with the flat
list of argument leaves, an `Executable` checks them (dtype, rank, shape; non-contiguous
arrays are copied to C order), explains a mismatch in the user's terms, then calls the driver
once. Work buffers (intermediates that are not returned) are
allocated once per executable and passed to every call; returned arrays are allocated by
the call itself, so a later call never overwrites a result the user holds.

`signature_key(args, leaves)` flattens arguments and computes, in one pass, a key of their
structure and each leaf's shape, strides and dtype; `Compiled.__call__` maps that key to
`Executable.entry(...)`, a closure that calls the driver directly: no re-trace, no checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ir.graph import Graph
from ir.types import TensorType, is_python_scalar, type_of
from runtime.execution.blas import adaptive_threads, with_one_blas_thread
from runtime.execution.specs import ALLOCATED, DonationMode


class ArgumentError(TypeError, ValueError):
    """Arguments that do not match what the compiled code was built for."""


class NoFastPath(Exception):
    """A leaf type the fast signature key does not cover (the checked path handles it)."""


_SCALAR_TYPES = (float, int, bool)
# A driver whose products do this many FLOPs runs on two threads and is timed to fall back to
# one while a core is taken (runtime/execution/blas.py, `Adaptive`); smaller ones are not timed.
ADAPTIVE_FLOPS = 2**22


def contraction_flops(graph: Graph) -> int:
    """FLOPs of a graph's matmuls and convolutions (multiply-adds x 2)."""
    from ir.ops import Op

    total = 0
    for node in graph.nodes:
        if node.op == Op.MATMUL:
            total += 2 * int(np.prod(node.out.shape)) * node.inputs[0].shape[-1]
        elif node.op == Op.CONV2D:
            total += 2 * int(np.prod(node.out.shape)) * int(np.prod(node.inputs[1].shape[1:]))
    return total


def signature_key(tree: Any, leaves: list) -> Any:
    """Flatten `tree` into `leaves` (pytree order) and return a hashable signature key."""
    kind = type(tree)
    if kind is np.ndarray:
        leaves.append(tree)
        return (tree.shape, tree.strides, tree.dtype.char)
    if kind is tuple or kind is list or kind is dict:
        if kind is dict:
            keys = sorted(tree)
            children = [tree[k] for k in keys]
        else:
            keys, children = None, tree
        parts = []
        for child in children:  # arrays inline: this runs on every call
            if type(child) is np.ndarray:
                leaves.append(child)
                parts.append((child.shape, child.strides, child.dtype.char))
            else:
                parts.append(signature_key(child, leaves))
        return (kind, keys and tuple(keys), tuple(parts))
    if tree is None:
        return None
    if kind in _SCALAR_TYPES or isinstance(tree, np.generic):
        leaves.append(tree)
        return kind
    if isinstance(tree, tuple) and hasattr(kind, "_fields"):
        return (kind, tuple([signature_key(child, leaves) for child in tree]))
    raise NoFastPath(kind)


class Executable:
    """One compiled graph: `executable(leaves) -> list of output arrays (0-d as scalars)`.

    Donated outputs (`generated.donation`: output -> input leaf) are the input arrays
    themselves after the call, holding the new values (written by the driver, or copied here
    when the driver could not write them in place)."""

    def __init__(self, graph: Graph, generated, driver):
        self.driver = driver  # the Numba dispatcher
        from runtime.execution.linking import protect

        protect(driver)  # its cached machine code loads only with its kernels registered
        # what calls it: with BLAS held to one thread if the driver runs Numba threads
        threads = getattr(generated, "threads", False)
        self.call_driver = with_one_blas_thread(driver) if threads else driver
        if threads or contraction_flops(graph) >= ADAPTIVE_FLOPS:  # on one thread after a stall
            self.call_driver = adaptive_threads(self.call_driver, threads)
        self.source = generated.listing()  # the driver and its kernels
        self.kernel_modules = sorted(getattr(generated, "kernels", {}))  # loaded first
        self.in_types: list[TensorType] = [v.type for v in graph.inputs]
        self.paths = [f"argument leaf {k}" for k in range(len(graph.inputs))]
        self.out_convert = [t.dtype.type if s else None
                            for t, s in zip(generated.out_types, generated.out_scalar)]
        n_out = len(generated.out_types)
        self.returned = list(generated.returned) if generated.returned or \
            generated.donation else list(range(n_out))
        self.donation = dict(generated.donation)
        self.donated_inputs = {i for i, _ in self.donation.values()}
        self.plan = generated.plan
        self.guard = generated.guard
        self.refs = set(getattr(generated, "refs", ()))  # 0-d inputs passed as arrays
        self.extra = tuple(_extra_arg(spec) for spec in generated.extra_args)
        self.buffer_bytes = sum(spec.dtype.itemsize * int(np.prod(spec.shape))
                                for spec in generated.extra_args
                                if spec.kind in ALLOCATED)
        self._ready = False

    def kernels(self) -> list:
        """The Numba dispatchers of the kernels the driver calls (runtime/execution/linking.py)."""
        import sys

        return [sys.modules[name].kernel for name in self.kernel_modules]

    def __call__(self, leaves: list) -> list:
        args = self.check(leaves)
        return self._assemble(self._run(args), leaves, args)

    def check(self, leaves: list) -> list:
        """The leaves as the driver takes them, or an ArgumentError saying what differs."""
        if len(leaves) != len(self.in_types):
            raise ArgumentError(f"expected {len(self.in_types)} array arguments (leaves), "
                                f"got {len(leaves)}")
        for i in self.donated_inputs:
            leaf = leaves[i]
            if type(leaf) is not np.ndarray or not leaf.flags.writeable:
                raise ArgumentError(
                    f"{self.paths[i]} is donated (its new value is written into it), so it "
                    f"must be a writable NumPy array, not {type(leaf).__name__}")
        args = [_check_leaf(leaf, t, path)
                for leaf, t, path in zip(leaves, self.in_types, self.paths)]
        for i in self.refs:  # a donated 0-d array: the driver writes its new value into it
            args[i] = leaves[i]
        return args

    def _run(self, args: list):
        if not self._ready:
            from runtime.execution.linking import ensure_compiled

            ensure_compiled(self.driver, (*args, *self.extra))
            self._ready = True
        return self.call_driver(*args, *self.extra)

    def argument_types(self, leaves: list) -> tuple:
        """The Numba types the driver is compiled for, for these argument leaves."""
        from numba import typeof

        return tuple(typeof(a) for a in (*self.check(leaves), *self.extra))

    def prepare(self, types: tuple, load_only: bool = False) -> bool:
        """Compile the driver (and its kernels) for `types`, or with `load_only` only load it
        from the disk cache; whether it is ready to run."""
        from runtime.execution.linking import ensure_compiled

        self._ready = ensure_compiled(self.driver, types, typed=True, load_only=load_only)
        return self._ready

    def _assemble(self, outs: tuple, leaves: list, args: list) -> list:
        result: list[Any] = [None] * len(self.out_convert)
        for pos, i in enumerate(self.returned):
            c = self.out_convert[i]
            result[i] = outs[pos] if c is None else c(outs[pos])
        commit = self.guard is None or bool(np.isfinite(result[self.guard]))
        for o, (i, mode) in self.donation.items():
            target = leaves[i]
            if not commit:
                result[o] = target
                continue
            if mode == DonationMode.PYTHON:
                np.copyto(target, result[o])
            elif args[i] is not target and mode != DonationMode.SAME:  # ran on a C-order copy
                np.copyto(target, args[i])
            result[o] = target
        return result

    def entry(self, out_tree, example: list, unflatten: Callable) -> Callable[[list], Any]:
        """The fast call for leaves shaped like `example` (same signature key): no checks,
        one driver call, the output pytree built by one generated expression."""
        driver, extra = self.call_driver, self.extra
        direct = all(type(leaf) is not np.ndarray or leaf.ndim == 0 or leaf.flags.c_contiguous
                     for leaf in example)
        if not direct or any(type(example[i]) is not np.ndarray for i in self.donated_inputs):
            return lambda leaves: unflatten(out_tree, self(leaves))
        convert = [(i, _to_driver(leaf, t)) for i, (leaf, t)
                   in enumerate(zip(example, self.in_types))
                   if i not in self.refs and _to_driver(leaf, t)]
        copies = [(self.returned.index(o), i) for o, (i, mode) in self.donation.items()
                  if mode == DonationMode.PYTHON]
        guard = None if self.guard is None else self.returned.index(self.guard)
        build = output_builder(out_tree, self.out_convert, self.returned, self.donation)
        if build is None:
            return lambda leaves: unflatten(out_tree, self(leaves))
        if not convert and not copies:
            return lambda leaves: build(driver(*leaves, *extra), leaves)

        def call(leaves: list) -> Any:
            args = list(leaves)
            for i, fn in convert:
                args[i] = fn(args[i])
            outs = driver(*args, *extra)
            if guard is None or np.isfinite(outs[guard]):
                for pos, i in copies:
                    np.copyto(leaves[i], outs[pos])
            return build(outs, leaves)

        return call


def _to_driver(leaf: Any, expected: TensorType) -> Callable | None:
    """How the fast path converts a leaf for the driver (None: passed as it is)."""
    if type(leaf) is np.ndarray:
        return (lambda a: a[()]) if leaf.ndim == 0 else None
    if is_python_scalar(leaf):
        return expected.dtype.type
    return None


def output_builder(out_tree, convert: list, returned: list[int] | None = None,
                   donation: dict | None = None) -> Callable[[tuple, list], Any] | None:
    """A function `(driver outputs, input leaves) -> the user's pytree`, as one expression
    (0-d results converted to NumPy scalars, donated outputs are their input leaves); None
    when the tree is not expressible."""
    namespace: dict[str, Any] = {}
    counter = iter(range(len(convert)))
    returned = list(range(len(convert))) if returned is None else returned
    donation = donation or {}

    def expr(tree) -> str:
        if tree.kind == "leaf":
            i = next(counter)
            if i in donation:
                return f"L[{donation[i][0]}]"
            pos = returned.index(i)
            if convert[i] is None:
                return f"o[{pos}]"
            namespace[f"c{i}"] = convert[i]
            return f"c{i}(o[{pos}])"
        if tree.kind == "none":
            return "None"
        parts = [expr(child) for child in tree.children]
        if tree.kind == "dict":
            if not all(type(k) in (str, int) for k in tree.meta):
                raise NoFastPath(tree)
            return "{" + ", ".join(f"{k!r}: {p}" for k, p in zip(tree.meta, parts)) + "}"
        if tree.kind == "list":
            return "[" + ", ".join(parts) + "]"
        if tree.kind == "namedtuple":
            name = f"t{len(namespace)}"
            namespace[name] = tree.meta
            return f"{name}({', '.join(parts)})"
        return "(" + "".join(p + ", " for p in parts) + ")"

    try:
        return eval(f"lambda o, L: {expr(out_tree)}", namespace)  # the text is built above
    except (NoFastPath, SyntaxError):
        return None


def _extra_arg(spec) -> np.ndarray:
    if spec.kind in ALLOCATED:
        return np.empty(spec.shape, spec.dtype)
    return np.array(spec.value, copy=True)  # writable, C order: one Numba signature


def _check_leaf(leaf: Any, expected: TensorType, path: str):
    if is_python_scalar(leaf):
        if expected.ndim:
            raise ArgumentError(f"{path}: expected {expected}, got a Python "
                                f"{type(leaf).__name__}")
        return expected.dtype.type(leaf)
    array = np.asarray(leaf)
    got = type_of(array) if array.dtype.kind in "fiub" else None
    if array.dtype != expected.dtype:
        shown = got or f"an array of dtype {array.dtype}"
        raise ArgumentError(f"{path}: expected {expected}, got {shown}; cast with "
                            f".astype(np.{expected.dtype.name})")
    if array.shape != expected.shape:
        raise ArgumentError(f"{path}: expected {expected}, got {got}: the compiled code was "
                            f"built for shape {expected.shape}")
    if expected.ndim == 0:
        return array[()]
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)  # transposed or sliced: copy once, C order
    return array
