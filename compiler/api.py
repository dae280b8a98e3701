"""`compile`: trace a function once per input signature, lower it, and run it.

A signature is the pytree structure of the arguments, each leaf's shape and dtype (Python
scalars are weakly typed and traced), and the values of static arguments
(compiler/arguments.py). The callable also shows what it built: `.ir(*args, stage=...)`,
`.source(*args)`, `.summary(*args)` (text that a notebook shows as HTML), `.dot(*args)`
(Graphviz text, with `.render(path)`) and `.compare(*args)`. Building the executable is
compiler/build.py's.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from compiler.arguments import (
    Traced,
    arg_names,
    check_labels,
    leaf_paths,
    leaf_spec,
    leaf_types,
    with_label_checks,
)
from compiler.array_tracer import new_trace
from compiler.build import BACKENDS, build_executable
from compiler.errors import TraceError, traceback_source
from compiler.graphviz import DotSource
from compiler.numpy_creation import tracing_numpy
from compiler.pytree import (
    TreeDef,
    describe_tree,
    dict_without,
    sub_tree,
    tree_flatten,
    tree_unflatten,
)
from compiler.tracing import ACTIVE_TRACES, Trace, Tracer, recording
from ir.graph import Graph
from ir.interpreter import evaluate
from ir.printer import Listing, format_graph, to_dot
from ir.types import DTYPES
from runtime.execution.background import BackgroundBuild
from runtime.execution.executable import NoFastPath, signature_key


class Compiled:
    """A function compiled per input signature. Call it like the original function."""

    def __init__(self, fn: Callable, static_argnums: Sequence[int] = (),
                 backend: str | None = None, donate_argnums: Sequence[int] = (),
                 donate_guard: int | None = None, wait: bool | None = True):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.wait = wait  # False: first calls on the interpreter while compiling (background)
        self.static_argnums = tuple(sorted(static_argnums))
        self.donate_argnums = tuple(sorted(donate_argnums))
        self.donate_guard = donate_guard
        self.backend = backend or os.environ.get("CHAINJIT_BACKEND", "numba")
        self._traces: dict[tuple, Traced] = {}
        self._fast: dict[Any, Callable] = {}  # signature key -> direct call (executable.py)
        self._unchecked: dict[Any, Callable] = {}  # the same, without label range checks

    # -- tracing ------------------------------------------------------------------------
    def _split(self, args: tuple) -> tuple[tuple, tuple]:
        for i in self.static_argnums:
            if i >= len(args):
                raise TypeError(f"static_argnums names argument {i}, but {len(args)} were given")
        static = tuple(args[i] for i in self.static_argnums)
        try:
            hash(static)
        except TypeError:
            raise TraceError("static arguments must be hashable (use tuples, not lists)") from None
        dynamic = tuple(None if i in self.static_argnums else a for i, a in enumerate(args))
        return static, dynamic

    def signature(self, args: tuple) -> tuple[tuple, list, TreeDef, list[str], tuple]:
        static, dynamic = self._split(args)
        leaves, in_tree = tree_flatten(dynamic)
        names = arg_names(self.fn, len(args))
        paths = [p for i, a in enumerate(dynamic) for p in leaf_paths(a, names[i])]
        hint = f"compile({self.__name__}, static_argnums=(i,))"
        specs = tuple(leaf_spec(leaf, path, hint) for leaf, path in zip(leaves, paths))
        return (in_tree, specs, static), leaves, in_tree, paths, specs

    def trace(self, *args) -> Traced:
        """Trace (or fetch the cached trace) for these arguments' signature."""
        key, _, in_tree, paths, specs = self.signature(args)
        if key in self._traces:
            return self._traces[key]
        trace = new_trace()
        tracers = [trace.new_input(s.type, s.weak) for s in specs]
        rebuilt = list(tree_unflatten(in_tree, tracers))
        for i in self.static_argnums:
            rebuilt[i] = args[i]
        try:
            with tracing_numpy(), recording(trace):  # np.array([x, y]) of tracers stacks them
                out = self.fn(*rebuilt)
        except KeyError as error:
            missing = self._missing_key(error, args)
            if missing is None:
                raise
            raise missing from None
        out_leaves, out_tree = tree_flatten(out)
        out_vars = [self._output_var(trace, leaf) for leaf in out_leaves]
        graph = trace.to_graph(out_vars)
        labels = [(i, trace.label_bounds[var], paths[i]) for i, var in enumerate(graph.inputs)
                  if var in trace.label_bounds]
        traced = Traced(graph, in_tree, specs, tuple(paths), out_tree,
                        donate=self._donation(args, out, specs, graph), labels=labels)
        self._traces[key] = traced
        return traced

    def _missing_key(self, error: KeyError, args: tuple) -> TraceError | None:
        """A KeyError raised while tracing, for a key some dict argument lacks: a TraceError
        naming the argument, the key and the structure expected (an earlier call's)."""
        if len(error.args) != 1:
            return None
        key = error.args[0]
        names = arg_names(self.fn, len(args))
        for i, arg in enumerate(args):
            if i in self.static_argnums:
                continue
            path = dict_without(arg, key, names[i])
            if path is None:
                continue
            expected = [describe_tree(tree_unflatten(t[0], leaf_types(t))[i])
                        for t in self._traces if len(t[0].children) > i
                        and t[0].children[i] != tree_flatten(arg)[1]]
            shown = f"; an earlier call passed {expected[0]}" if expected else ""
            return TraceError(
                source=traceback_source(error.__traceback__),
                message=f"argument {names[i]} has no key {key!r}, which {self.__name__} reads: "
                f"{path} is {describe_tree(sub_tree(arg, path, names[i]))}{shown}",
                fix=f"pass {path} with a {key!r} entry (the structure {self.__name__} "
                "expects), or read it with .get() and a default")
        return None

    def _donation(self, args: tuple, out: Any, specs: tuple, graph: Graph) -> dict[int, int]:
        """Output leaf -> input leaf for `donate_argnums`: each donated argument is matched
        with the first output part (the whole output, or an element of an output tuple/list)
        of the same pytree structure, leaf types and non-weak leaves."""
        if not self.donate_argnums:
            return {}
        starts, k = {}, 0
        for i, a in enumerate(args):
            if i in self.static_argnums:
                continue
            starts[i] = k
            k += len(tree_flatten(a)[0])
        parts, k = [], 0
        for part in (list(out) if type(out) in (tuple, list) else [out]):
            part_leaves, part_tree = tree_flatten(part)
            parts.append((k, part_tree))
            k += len(part_leaves)
        if type(out) in (tuple, list):
            parts.append((0, tree_flatten(out)[1]))
        mapping: dict[int, int] = {}
        used: set[int] = set()
        for i in self.donate_argnums:
            if i not in starts:
                raise TraceError(f"donate_argnums names argument {i}, which is static or "
                                 "missing")
            tree = tree_flatten(args[i])[1]
            n = tree.num_leaves
            for start, part_tree in parts:
                leaves_in = range(starts[i], starts[i] + n)
                leaves_out = range(start, start + n)
                if part_tree != tree or used & set(leaves_out):
                    continue
                if any(specs[j].weak or graph.outputs[o].type != specs[j].type
                       for o, j in zip(leaves_out, leaves_in)):
                    continue
                mapping.update(zip(leaves_out, leaves_in))
                used |= set(leaves_out)
                break
            else:
                warnings.warn(f"{self.__name__}: donated argument {i} matches no output of "
                              "the same structure and types; it is not updated in place",
                              stacklevel=4)
        return mapping

    @staticmethod
    def _output_var(trace: Trace, leaf: Any):
        if isinstance(leaf, Tracer):
            if leaf.trace is not trace:
                raise TraceError("the function returned a traced value from another trace")
            return leaf.ir_var
        value = np.asarray(leaf)
        if value.dtype not in DTYPES:
            raise TraceError(f"the function returned a {type(leaf).__name__}, not an array")
        return trace.constant(value)

    # -- lowering and running -----------------------------------------------------------
    def lowered(self, traced: Traced, stage: str) -> Graph:
        if stage == "traced":
            return traced.graph
        if stage not in traced.lowered:
            from compiler import pipeline  # the passes (and networkx): only when lowering

            traced.lowered[stage] = pipeline.lower(traced.graph, stage)
        return traced.lowered[stage]

    def __call__(self, *args):
        if ACTIVE_TRACES:  # called while another function is traced: record into its trace
            return self.fn(*args)
        # the fast path: one pass over the arguments, one dict lookup, one driver call
        fast_key, leaves = self._fast_key(args)
        entry = self._fast.get(fast_key) if fast_key is not None else None
        if entry is not None:
            return entry(leaves)
        if any(isinstance(leaf, Tracer) for leaf in tree_flatten(args)[0]):
            return self.fn(*args)  # a tracer escaped into a call: record into its trace
        traced = self.trace(*args)
        _, leaves, *_ = self.signature(args)
        check_labels(traced.labels, leaves)
        if traced.executable is None:
            traced.executable = build_executable(self, traced, leaves)
        if isinstance(traced.executable, BackgroundBuild) and traced.executable.ready:
            building, traced.executable = traced.executable, traced.executable.wait()
            building.announce()
        outputs = traced.executable(leaves)
        outputs = [out if i in traced.donate or np.ndim(out) else out[()]
                   for i, out in enumerate(outputs)]
        if fast_key is not None and hasattr(traced.executable, "entry"):
            entry = traced.executable.entry(traced.out_tree, leaves, tree_unflatten)
            self._unchecked[fast_key] = entry
            self._fast[fast_key] = with_label_checks(entry, traced.labels)
        return tree_unflatten(traced.out_tree, outputs)

    def precompile(self, *args) -> None:
        """Trace and build for these arguments' signature now, without running (with
        `wait=False` the build starts in the background and this returns at once)."""
        traced = self.trace(*args)
        if traced.executable is None:
            traced.executable = build_executable(self, traced, self.signature(args)[1])

    def building(self, *args) -> bool:
        """Whether these arguments' code is still compiling in the background (its calls run
        on the interpreter meanwhile: runtime/execution/background.py)."""
        traced = self.trace(*args)
        return isinstance(traced.executable, BackgroundBuild) and not traced.executable.ready

    def unchecked_entry(self, fast_key) -> Callable | None:
        """The direct call for a signature key without the label range checks (for a caller
        that makes them itself, as train_step does)."""
        return self._unchecked.get(fast_key)

    def _fast_key(self, args: tuple) -> tuple[Any, list]:
        """One-pass flatten + signature key for the direct call path (None: not eligible)."""
        leaves: list = []
        try:
            if self.static_argnums:
                static, dynamic = self._split(args)
                return (signature_key(dynamic, leaves), static), leaves
            return signature_key(args, leaves), leaves
        except (NoFastPath, TraceError):
            return None, leaves

    def source(self, *args) -> str:
        """The generated Numba source for these arguments' signature (names as in `.ir`)."""
        from compiler.codegen import generate

        traced = self.trace(*args)
        generated = generate(self.lowered(traced, "fused"), traced.donate, self.donate_guard)
        return Listing(generated.listing())

    def ir(self, *args, stage: str = "traced") -> str:
        """The IR at a stage: "traced", "joint", "optimized" or "fused", as text.

        For a transformed function (`grad(f)`, `value_and_grad(f)`) "traced" is the forward
        graph of `f` alone and "joint" the whole graph, forward and backward."""
        return Listing(format_graph(self._stage_graph(args, stage)))

    def summary(self, *args) -> str:
        """One line per kernel of the fused graph: kind, iteration shape, ops, bytes moved;
        then the generated driver's work-buffer plan (slots shared by liveness, with the
        donation this function was compiled with)."""
        from compiler.codegen import plan_buffers
        from compiler.codegen.summary import kernel_summary

        traced = self.trace(*args)
        graph = self.lowered(traced, "fused")
        return Listing(kernel_summary(graph, plan_buffers(graph, traced.donate,
                                                          self.donate_guard)))

    def profile(self, *args, seconds: float = 0.5):
        """Run the compiled code on these arguments with a timer around every kernel and BLAS
        call, for about `seconds`: a `Profile` whose text (print it) has one row per call
        (IR line, source line, median time, share of the step, FLOPs or bytes, rate against
        this machine's peak) and the step against its roofline bound; `.plot()` draws it
        (compiler/profile.py). Donated arguments are copied, not updated."""
        from compiler.profile import profile_graph

        if self.backend != "numba":
            raise ValueError(f"profile times compiled kernels; {self.__name__} runs on the "
                             f"{self.backend} backend (compile it with backend='numba')")
        traced = self.trace(*args)
        return profile_graph(self.__name__, self.lowered(traced, "fused"), traced.donate,
                             self.donate_guard, self.signature(args)[1], seconds)

    def compare(self, *args, rtol: float | None = None):
        """Run the compiled code and the interpreter side by side on these arguments and
        name the first kernel, IR node and source line whose output differs beyond `rtol`
        (relative to the value's largest magnitude; by default 1e-4 for float32, 1e-9 for
        float64), with both values' statistics (compiler/compare.py says how). Donated
        arguments are not updated."""
        from compiler.compare import compare_graph

        traced = self.trace(*args)
        graph = self.lowered(traced, "fused")
        leaves = self.signature(args)[1]

        def run(wide: Graph, leaves: list) -> list:
            if self.backend not in BACKENDS or self.backend == "interpreter":
                return evaluate(wide, leaves)
            from compiler.backend import build_numba

            return build_numba(wide)(leaves)

        return compare_graph(graph, leaves, run, rtol, self.backend)

    def dot(self, *args, stage: str = "traced") -> DotSource:
        """The IR at a stage as Graphviz DOT text; `.render("graph.svg")` (or .png, .pdf)
        draws it with Graphviz's `dot` (compiler/graphviz.py), and a notebook shows it."""
        return DotSource(to_dot(self._stage_graph(args, stage), self.__name__))

    def _stage_graph(self, args: tuple, stage: str) -> Graph:
        wrapped = getattr(self.fn, "__chainjit_wrapped__", None)
        if stage == "traced" and wrapped is not None:
            if getattr(self, "_unwrapped", None) is None:
                self._unwrapped = Compiled(wrapped, self.static_argnums, self.backend)
            return self._unwrapped._stage_graph(args, stage)
        return self.lowered(self.trace(*args), stage)

    def __repr__(self) -> str:
        return f"<compiled {self.__name__} ({len(self._traces)} signatures traced)>"


def compile(fn: Callable | None = None, *, static_argnums: int | Sequence[int] = (),
            backend: str | None = None, donate_argnums: int | Sequence[int] = (),
            donate_guard: int | None = None, wait: bool | None = True):
    """Compile `fn`: trace once per input signature and run the lowered graph.

    Use as `@compile`, `@compile(static_argnums=(1,))` or `compile(fn)`.

    `donate_argnums`: arguments whose arrays receive new values in place (as in JAX, but the
    arrays stay valid): each is matched with the output part of the same pytree structure
    (the whole output, or an element of an output tuple), and after a call that output IS
    the argument's arrays, updated; a training step `(params, state, x, y) -> (loss,
    new_params, new_state)` with `donate_argnums=(0, 1)` updates params and state without a
    copy. `donate_guard`: the index of a scalar output leaf; donated arrays are updated only
    when it is finite (the writes are then made at the end of the call). A donated array
    must not share memory with another argument (as in JAX).

    `wait=False`: a call whose code is not compiled yet starts the compile on a thread and
    runs on the reference interpreter (the same graph in NumPy, donation included) until the
    compiled code is ready (runtime/execution/background.py); `None` waits only if CHAINJIT_WAIT=1.
    `train_step` and `fit` pass None: a training loop starts at once.

    >>> import numpy as np
    >>> f = compile(lambda x, w: np.maximum(x @ w, 0.0))
    >>> f(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)).shape
    (2, 4)
    """
    if isinstance(static_argnums, int):
        static_argnums = (static_argnums,)
    if isinstance(donate_argnums, int):
        donate_argnums = (donate_argnums,)
    options = {"donate_argnums": donate_argnums, "donate_guard": donate_guard, "wait": wait}
    if fn is None:
        return lambda f: Compiled(f, static_argnums, backend, **options)
    return Compiled(fn, static_argnums, backend, **options)
