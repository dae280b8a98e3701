"""Codegen's outlining step: each node block that does work becomes a kernel module of its own.

Takes the module text `render_module` wrote (one `driver` holding every node's block) and
gives the driver again, in which each block that loops or calls a library (a loop kernel, a
BLAS call, a convolution) is one call of a kernel, plus the kernels' module texts. A kernel's
text holds nothing of the model it came from: its parameters and locals are renamed in order
of first use (`a0, a1, ...`, `t0, t1, ...`), sizes are read from its arrays, constants are
its arguments. Its module is named by a hash of that text, so the same kernel in another
model, in this model after an edit, or in the backward of a forward already seen is the same
module, compiled once per machine (Numba's disk cache) and called, not compiled again:

    kern_3f2a91c0 = kernel_call("chainjit_k_3f2a91c0...", 3)      # the driver module's head
    ...
    i, j = kern_3f2a91c0(h, a, k1_e, i, j)                          # in the driver

The driver calls kernels through runtime/linking.py (an opaque call: Numba does not link the
kernel into the driver and optimise it again). What stays in the driver is glue: the
workspace views of each block's buffers (hoisted above its call), reshapes, transposes,
scalar arithmetic and the deferred donated writes.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass

from compiler.codegen.split import _blocks, _Names

KERNEL_PREFIX = "kern_"  # the driver's names for kernel callers ("_": never an IR name)
# Calls that are glue, not work: views and scalar casts.
GLUE_METHODS = frozenset({"reshape"})
GLUE_ATTRIBUTES = frozenset({"T", "shape"})
_BUILTINS = frozenset(dir(builtins))


@dataclass
class Kernel:
    """One outlined kernel: its module text and what the driver passes and receives."""

    text: str  # the module, as cached (no comments but the stamp)
    params: list[str]  # driver names passed, in order
    returns: list[str]  # driver names assigned from its result


class _Globals(ast.NodeVisitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Import(self, node: ast.Import) -> None:
        self.names.update((a.asname or a.name).split(".")[0] for a in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.names.update(a.asname or a.name for a in node.names)


def _is_glue_expr(node: ast.expr) -> bool:
    """A view or a scalar read: names, constants, subscripts, `.T`, `.shape`, `.reshape(...)`,
    arithmetic and `max` of those (the workspace views and size expressions)."""
    if isinstance(node, (ast.Name, ast.Constant)):
        return True
    if isinstance(node, ast.Attribute):
        return node.attr in GLUE_ATTRIBUTES and _is_glue_expr(node.value)
    if isinstance(node, ast.Subscript):
        return _is_glue_expr(node.value) and all(_is_glue_expr(n) for n in _slice_parts(node))
    if isinstance(node, ast.Slice):
        return all(_is_glue_expr(n) for n in (node.lower, node.upper, node.step) if n)
    if isinstance(node, ast.Tuple):
        return all(_is_glue_expr(n) for n in node.elts)
    if isinstance(node, ast.BinOp):
        return _is_glue_expr(node.left) and _is_glue_expr(node.right)
    if isinstance(node, ast.Call):
        func = node.func
        glue_call = (isinstance(func, ast.Attribute) and func.attr in GLUE_METHODS
                     and _is_glue_expr(func.value)) or (isinstance(func, ast.Name)
                                                        and func.id == "max")
        return glue_call and all(_is_glue_expr(a) for a in node.args) and not node.keywords
    return False


def _slice_parts(node: ast.Subscript) -> list[ast.expr]:
    part = node.slice
    return list(part.elts) if isinstance(part, ast.Tuple) else [part]


def _is_glue(stmt: ast.stmt) -> bool:
    return (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name) and _is_glue_expr(stmt.value))


def _does_work(stmts: list[ast.stmt], library: set[str]) -> bool:
    """A loop, or a call of anything but a glue method (np.dot, gemm, np.empty, .fill...)."""
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, (ast.For, ast.While)):
                return True
            if isinstance(node, ast.Call) and not (
                    isinstance(node.func, ast.Attribute) and node.func.attr in GLUE_METHODS):
                if isinstance(node.func, ast.Name) and node.func.id not in library:
                    continue  # a builtin (max, range) or a cast
                return True
    return False


class _Rename(ast.NodeTransformer):
    """Parameters a0.., locals t0.. in order of first use; loop indices and globals kept."""

    def __init__(self, params: list[str], keep: set[str]):
        self.map = {name: f"a{k}" for k, name in enumerate(params)}
        self.keep = keep

    def visit_Name(self, node: ast.Name) -> ast.Name:
        name = node.id
        if name in self.keep or re.fullmatch(r"i\d+", name):
            return node
        if name not in self.map:
            self.map[name] = f"t{sum(1 for v in self.map.values() if v[0] == 't')}"
        return ast.copy_location(ast.Name(self.map[name], node.ctx), node)


class _ConditionalNames(_Names):
    """`_Names`, where a name assigned inside an `if` is also read (it keeps its old value on
    the other path), so a kernel receives it."""

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        before = set(self.defined)
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)
        for name in self.defined - before:
            self.exposed.add(name)


def _names(stmts: list[ast.stmt]) -> _Names:
    found = _ConditionalNames()
    for stmt in stmts:
        found.visit(stmt)
    return found


def outline_kernels(source: str, stamp: str, decorator: str) -> tuple[str, dict[str, Kernel]]:
    """(driver module, {kernel module name: Kernel}) for a module `render_module` wrote.

    `stamp` is the environment comment every generated module carries; `decorator` the
    kernels' `@numba.njit(...)` options besides `parallel` (added where a kernel has a
    prange loop) and `fastmath` (where it accumulates: reassociated float sums)."""
    from runtime.cache import KERNEL_PREFIX as MODULE_PREFIX
    from runtime.cache import cached_text, module_name

    lines = source.splitlines()
    tree = ast.parse(source)
    driver = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "driver")
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    found_globals = _Globals()
    for node in imports:
        found_globals.visit(node)
    library = found_globals.names - {"np", "numba"}
    # name -> (module, the import's trailing comment: the library's source hash)
    library_imports = {(a.asname or a.name): (n.module, _comment(lines[n.lineno - 1]))
                       for n in imports if isinstance(n, ast.ImportFrom) for a in n.names}
    globals_ = found_globals.names | _BUILTINS
    prologue, blocks = _blocks(driver.body[:-1], lines)
    names = [_names(b) for b in blocks]
    later = _names([driver.body[-1]]).exposed
    read_later = []
    for found in reversed(names):
        read_later.append(set(later))
        later |= found.exposed
    read_later.reverse()
    available = {a.arg for a in driver.args.args} | _names(prologue).stores

    kernels: dict[str, Kernel] = {}
    out: list[str] = lines[:driver.body[0].lineno - 1]
    if prologue:
        out += lines[prologue[0].lineno - 1:prologue[-1].end_lineno]
    start = prologue[-1].end_lineno if prologue else driver.body[0].lineno - 1
    for block, later_reads in zip(blocks, read_later):
        glue = 0
        while glue < len(block) and _is_glue(block[glue]):
            glue += 1
        head, work = block[:glue], block[glue:]
        stop = block[-1].end_lineno
        if not work or not _does_work(work, library):
            out += lines[start:stop]
        else:
            first = work[0].lineno - 1
            while first > start and lines[first - 1].strip().startswith("#"):
                first -= 1  # the comments above the work belong with its call
            out += lines[start:first]
            kernel = _outline(work, available | _names(head).stores, later_reads, globals_,
                              library_imports, stamp, decorator)
            name = module_name(cached_text(kernel.text), MODULE_PREFIX)
            kernels[name] = kernel
            out += lines[first:work[0].lineno - 1]
            indent = " " * work[0].col_offset
            call = f"{KERNEL_PREFIX}{name[len(MODULE_PREFIX):][:10]}({', '.join(kernel.params)})"
            returned = ", ".join(kernel.returns)
            out.append(f"{indent}{returned} = {call}" if returned else f"{indent}{call}")
        available |= _names(block).stores
        start = stop
    out += lines[start:]
    return _with_callers(out, driver, kernels, MODULE_PREFIX), kernels


def _comment(line: str) -> str:
    return "  " + line[line.index("#"):] if "#" in line else ""


def _outline(work: list[ast.stmt], available: set[str], later_reads: set[str],
             globals_: set[str], imports: dict[str, tuple[str, str]], stamp: str,
             decorator: str) -> Kernel:
    found = _names(work)
    order = [n.id for s in work for n in ast.walk(s) if isinstance(n, ast.Name)]
    params = [n for n in dict.fromkeys(order) if n in found.exposed and n in available
              and n not in globals_]
    returns = sorted(found.stores & later_reads)
    rename = _Rename(params, globals_)
    body = [rename.visit(ast.parse(ast.unparse(s)).body[0]) for s in work]
    renamed_returns = [rename.map[n] for n in returns]
    text_body = "\n".join(ast.unparse(s) for s in body)
    used = {n.id for s in body for n in ast.walk(s) if isinstance(n, ast.Name)}
    by_module: dict[tuple[str, str], list[str]] = {}
    for name in sorted(used & set(imports)):
        by_module.setdefault(imports[name], []).append(name)
    needed = [f"from {module} import {', '.join(fns)}{comment}"
              for (module, comment), fns in sorted(by_module.items())]
    options = [decorator]
    if "prange" in text_body:
        from compiler.kernels.parallel import parallel_options

        options.append(f"parallel={parallel_options()!r}")
    if any(isinstance(n, ast.AugAssign) for s in body for n in ast.walk(s)):
        options.append("fastmath={'reassoc'}")
    header = ['"""chainjit kernel (edit nothing: the file name is a hash of this text)."""',
              f"# {stamp}", "import numpy as np", "import numba", *needed, "", "",
              f"@numba.njit({', '.join(options)})",
              f"def kernel({', '.join(f'a{k}' for k in range(len(params)))}):"]
    indented = ["    " + line for line in text_body.splitlines()]
    if renamed_returns:
        indented.append(f"    return {', '.join(renamed_returns)}"
                        + ("," if len(renamed_returns) == 1 else ""))
    return Kernel("\n".join(header + indented) + "\n", params, returns)


def _with_callers(lines: list[str], driver: ast.FunctionDef, kernels: dict[str, Kernel],
                  prefix: str) -> str:
    """Insert the kernel callers (and their import) above the driver's decorator."""
    at = driver.decorator_list[0].lineno - 1
    while at > 0 and not lines[at - 1].strip():
        at -= 1
    callers = ["from runtime.linking import kernel_call"] if kernels else []
    callers += [f"{KERNEL_PREFIX}{name[len(prefix):][:10]} = kernel_call({name!r}, "
                f"{len(k.params)})" for name, k in sorted(kernels.items())]
    return "\n".join(lines[:at] + callers + lines[at:]) + "\n"
