"""Machine code: compiling or loading a generated function, and opaque calls between modules.

Numba links the LLVM module of every jitted function a function calls into the caller and
optimises it again there, so a driver calling N kernels compiles all N again, and nothing of
one model's compile serves another's. Here a kernel is a generated module of its own,
compiled once per machine into Numba's disk cache and named by a hash of its text; a driver
calls its machine code through a symbol (`kernel_call`: an intrinsic that declares
``<kernel module>_<signature hash>``), resolved by llvmlite at the address registered with
`llvmlite.binding.add_symbol`. Nothing is linked in or optimised twice, and a kernel that
another model (or this model's backward) already compiled is loaded, not compiled.

A symbol must be registered before LLVM finalises a driver that names it: an unresolved one
crashes the process. Compiling a driver registers each kernel as Numba types its call (the
intrinsic's typer compiles or loads the kernel for the argument types). A driver loaded from
the disk cache is not typed again, so after each compile the kernels it calls and their
argument types are written beside its module (``<module>.<signature hash>.links``), and
`ensure_compiled` registers them before it lets Numba load the driver; without that file the
driver is compiled, never loaded blind (`protect` puts the same check in Numba's own loads).
"""

from __future__ import annotations

import hashlib
import pickle
import sys
import warnings
from collections.abc import Callable

from runtime.execution.cache import CacheWarning, cache_dir, write_atomic

_BOUND: dict[str, int] = {}  # symbol -> address registered in this process


class KernelCall:
    """The caller of one kernel module's `kernel` from a driver: `__call__` is the intrinsic
    the driver's code calls; `seen` the argument types it was typed with in this process."""

    def __init__(self, module_name: str, arity: int):
        self.module_name = module_name
        self.seen: set[tuple] = set()
        self.intrinsic = _make_intrinsic(self, arity)

    def dispatcher(self):
        return sys.modules[self.module_name].kernel

    def bind(self, argtypes: tuple, load_only: bool = False):
        """Compile or load the kernel for `argtypes`, register its symbol; its compile result
        (None when `load_only` and it is not in the disk cache)."""
        dispatcher = self.dispatcher()
        if argtypes not in dispatcher.overloads:
            if not ensure_compiled(dispatcher, argtypes, typed=True, load_only=load_only):
                return None
        cres = dispatcher.overloads[argtypes]
        name = symbol(self.module_name, argtypes)
        if name not in _BOUND:
            import llvmlite.binding as llvm

            address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
            llvm.add_symbol(name, address)
            _BOUND[name] = address
        self.seen.add(argtypes)
        return cres


def symbol(module_name: str, argtypes: tuple) -> str:
    digest = hashlib.sha256(repr(tuple(str(t) for t in argtypes)).encode()).hexdigest()[:16]
    return f"{module_name}_{digest}"


def kernel_call(module_name: str, arity: int) -> Callable:
    """The intrinsic a generated driver calls a kernel module with (`arity` arguments)."""
    return KernelCall(module_name, arity).intrinsic  # ensure_compiled finds `_chainjit_call`


def _make_intrinsic(call: KernelCall, arity: int):
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    def typer(typingctx, *args):
        argtypes = tuple(types.unliteral(a) for a in args)
        cres = call.bind(argtypes)
        signature = cres.signature.return_type(*argtypes)

        def codegen(context, builder, sig, llargs):
            conv = context.call_conv
            fnty = conv.get_function_type(sig.return_type, sig.args)
            fn = cgutils.get_or_insert_function(builder.module, fnty,
                                                symbol(call.module_name, argtypes))
            status, out = conv.call_function(builder, fn, sig.return_type, sig.args, llargs)
            with cgutils.if_unlikely(builder, status.is_error):
                conv.return_status_propagate(builder, status)  # a kernel's raise
            return out

        return signature, codegen

    names = ", ".join(f"a{k}" for k in range(arity))
    namespace = {"typer": typer}
    # an intrinsic's typer takes its arguments by name (Numba folds no *args into it)
    exec(f"def call(typingctx, {names}):\n    return typer(typingctx, {names})", namespace)
    namespace["call"].__name__ = f"kernel_{call.module_name}"
    made = intrinsic(namespace["call"])
    made.__class__ = _make_python_callable(type(made))
    made._chainjit_call = call
    return made


_PYTHON_CALLABLE: dict[type, type] = {}


def _make_python_callable(base: type) -> type:
    """The intrinsic's class, callable from Python too (the kernel's Python function), so a
    driver runs as plain Python under NUMBA_DISABLE_JIT or through its `py_func`."""
    if base not in _PYTHON_CALLABLE:
        def __call__(self, *args):
            return self._chainjit_call.dispatcher().py_func(*args)

        _PYTHON_CALLABLE[base] = type(f"Python{base.__name__}", (base,), {"__call__": __call__})
    return _PYTHON_CALLABLE[base]


# -- compiling and loading -------------------------------------------------------------------
def ensure_compiled(dispatcher, args: tuple, typed: bool = False,
                    load_only: bool = False) -> bool:
    """See `_ensure_compiled`; under Numba's compiler lock, so that two threads (a build in
    the background and the main thread) never bind, load or compile one driver at once."""
    from numba.core.compiler_lock import global_compiler_lock

    with global_compiler_lock:
        return _ensure_compiled(dispatcher, args, typed, load_only)


def _ensure_compiled(dispatcher, args: tuple, typed: bool = False,
                     load_only: bool = False) -> bool:
    """Compile (or load from Numba's disk cache) `dispatcher` for `args`' types (or, with
    `typed`, for `args` as Numba types). With `load_only`, nothing is compiled: False when
    the code (the driver, or a kernel it calls) is not in the disk cache; else True.

    A driver that calls kernels loads from the cache only once the kernels named by its links
    file are registered (see the module docstring). A corrupt or truncated Numba index/data
    file makes loading raise; the index is then flushed and the code compiled again, and as a
    last resort compiled with no disk cache.
    """
    if typed:
        signature = tuple(args)
    else:
        from numba import typeof

        signature = tuple(typeof(a) for a in args)
    if signature in dispatcher.overloads:
        return True
    calls = protect(dispatcher)
    try:
        if (not calls or _bind_links(dispatcher, signature, calls, load_only)) and \
                load_cached(dispatcher, signature):
            return True
        if load_only:
            return False
        dispatcher.compile(signature)  # protected: loads a cached driver only once bound
        return True
    except Exception as error:  # noqa: BLE001 - retried below; a real error raises again
        if load_only:
            return False
        first = error
    try:
        dispatcher._cache.flush()
        dispatcher.compile(signature)
        what = "was unreadable and has been rebuilt"
    except Exception:  # noqa: BLE001
        from numba.core.caching import NullCache

        dispatcher._cache = NullCache()
        try:
            dispatcher.compile(signature)
        except Exception:  # noqa: BLE001 - the first error is the one to show
            raise first from None
        what = "is unusable; compiled without the disk cache"
    warnings.warn(f"chainjit: Numba's cache for {dispatcher.py_func.__module__} {what} "
                  f"({type(first).__name__}: {first})", CacheWarning, stacklevel=3)
    return True


def load_cached(dispatcher, signature: tuple) -> bool:
    """Load `signature`'s machine code from Numba's disk cache, as `Dispatcher.compile` does,
    but without first refreshing Numba's typing and lowering registries: loading object code
    needs neither, and the refresh (importing every NumPy implementation Numba has) is most of
    a warm start's time; of the refresh, loaded code needs only Numba's runtime (NRT)
    initialised, which is done here. Compiling refreshes the registries itself. False when
    there is nothing cached or this Numba lacks the pieces (`dispatcher.compile` does it all)."""
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.runtime import rtsys

    cache = getattr(dispatcher, "_cache", None)
    load = getattr(cache, "_load_overload", None)
    guard = getattr(cache, "_guard_against_spurious_io_errors", None)
    if load is None or guard is None:
        return False
    with global_compiler_lock:
        rtsys.initialize(dispatcher.targetctx)  # the one part of the refresh loaded code needs
        cres = None
        with guard():  # swallows the I/O errors Numba treats as a cache miss
            cres = load(signature, dispatcher.targetctx)
        if cres is None:
            return False
        dispatcher._cache_hits[signature] += 1
        if not cres.objectmode:
            dispatcher.targetctx.insert_user_function(cres.entry_point, cres.fndesc,
                                                      [cres.library])
        dispatcher.add_overload(cres)
    return True


def protect(dispatcher) -> list[KernelCall]:
    """Make every load of `dispatcher`'s (a driver's) machine code from Numba's disk cache go
    through its links file, Numba's own loads included (a call with new argument types, such
    as a read-only array, compiles or loads through the dispatcher): a cached driver is
    loaded only once the kernels it calls are registered, else it is compiled; and each save
    writes the links file. Returns the driver's kernel calls (none: nothing to protect)."""
    calls = _kernel_calls(dispatcher)
    cache = getattr(dispatcher, "_cache", None)
    if not calls or cache is None or getattr(cache, "_chainjit_protected", False):
        return calls
    load, save = cache.load_overload, cache.save_overload

    def load_overload(signature, target_context):
        if not _bind_links(dispatcher, tuple(signature), calls):
            return None
        return load(signature, target_context)

    def save_overload(signature, data):
        save(signature, data)
        _write_links(dispatcher, tuple(signature), calls)

    cache.load_overload, cache.save_overload = load_overload, save_overload
    cache._chainjit_protected = True
    return calls


def _kernel_calls(dispatcher) -> list[KernelCall]:
    """The kernel calls in the driver's own globals (not sys.modules: another thread may have
    put another copy of the module there)."""
    found = [getattr(v, "_chainjit_call", None) for v in dispatcher.py_func.__globals__.values()]
    return [c for c in found if c is not None]


def _links_path(dispatcher, signature: tuple):
    digest = hashlib.sha256(repr(tuple(str(t) for t in signature)).encode()).hexdigest()[:16]
    return cache_dir() / f"{dispatcher.py_func.__module__}.{digest}.links"


def _bind_links(dispatcher, signature: tuple, calls: list[KernelCall],
                load_only: bool = False) -> bool:
    """Register the kernels a cached driver of `signature` calls; False if unknown (or, with
    `load_only`, if one of them is not in the disk cache)."""
    try:
        with open(_links_path(dispatcher, signature), "rb") as f:
            links = pickle.load(f)
    except FileNotFoundError:
        return False
    except Exception as error:  # noqa: BLE001 - a damaged file: compile instead
        warnings.warn(f"chainjit: unreadable links file for {dispatcher.py_func.__module__} "
                      f"({error}); compiling it again", CacheWarning, stacklevel=4)
        return False
    by_name = {c.module_name: c for c in calls}
    if {name for name, _ in links} != set(by_name):  # every kernel the driver calls, no other
        return False
    for name, argtypes in links:
        if by_name[name].bind(argtypes, load_only) is None:
            return False
    return True


def _write_links(dispatcher, signature: tuple, calls: list[KernelCall]) -> None:
    links = sorted({(c.module_name, t) for c in calls for t in c.seen}, key=repr)
    try:
        write_atomic(_links_path(dispatcher, signature), pickle.dumps(links))
    except OSError as error:
        warnings.warn(f"chainjit: cannot write the links file in {cache_dir()} ({error}); "
                      "the next process compiles this driver again", CacheWarning,
                      stacklevel=4)
