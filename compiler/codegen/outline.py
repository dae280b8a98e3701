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

The driver calls kernels through runtime/execution/linking.py (an opaque call: Numba does not
link the kernel into the driver and optimise it again). What stays in the driver is glue: the
workspace views of each block's buffers (hoisted above its call), reshapes, transposes,
scalar arithmetic and the deferred donated writes.
"""

from __future__ import annotations

import ast
import builtins
import io
import re
import threading
import tokenize
from dataclasses import dataclass

KERNEL_PREFIX = "kern_"  # the driver's names for kernel callers ("_": never an IR name)
# Calls that are glue, not work: views (a node block of only these stays in the driver).
GLUE_METHODS = frozenset({"reshape"})
GLUE_FUNCTIONS = frozenset({"c_view"})
_BUILTINS = frozenset(dir(builtins))
_LOOP_INDEX = re.compile(r"i\d+")  # codegen's loop indices: bound by their loops
# codegen's helper names: an IR name and a role (accumulator, flat view, copy, reduce input)
_HELPER = re.compile(r"(.+?)(_acc|_in|_c|_f\d*|_b\d*)")


@dataclass
class Kernel:
    """One outlined kernel: its module text and what the driver passes and receives."""

    text: str  # the module, as cached (no comments but the stamp)
    params: list[str]  # driver names passed, in order
    returns: list[str]  # driver names assigned from its result


class _Names(ast.NodeVisitor):
    """The names a statement reads before it writes them (`exposed`) and those it writes."""

    def __init__(self) -> None:
        self.defined: set[str] = set()
        self.exposed: set[str] = set()
        self.stores: set[str] = set()

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            if node.id not in self.defined:
                self.exposed.add(node.id)
        else:
            self.defined.add(node.id)
            self.stores.add(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:  # the value is read first
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:  # x += v reads x
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self.visit(ast.Name(node.target.id, ast.Load()))
        self.visit(node.target)

    def visit_For(self, node: ast.For) -> None:  # the target is bound before the body runs
        self.visit(node.iter)
        self.visit(node.target)
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)


def _blocks(body: list[ast.stmt], lines: list[str]) -> tuple[list[ast.stmt], list[list]]:
    """(prologue, node blocks): a node block starts at a statement after a blank line."""
    prologue: list[ast.stmt] = []
    blocks: list[list[ast.stmt]] = []
    for stmt in body:
        before = stmt.lineno - 2  # the line before the statement and its comments
        while before >= 0 and lines[before].strip().startswith("#"):
            before -= 1
        starts = before >= 0 and not lines[before].strip()
        if blocks and not starts:
            blocks[-1].append(stmt)
        elif not blocks and not starts:
            prologue.append(stmt)
        else:
            blocks.append([stmt])
    return prologue, blocks


class _Globals(ast.NodeVisitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Import(self, node: ast.Import) -> None:
        self.names.update((a.asname or a.name).split(".")[0] for a in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.names.update(a.asname or a.name for a in node.names)


def _sizes_as_locals(source: str) -> str:
    """Each `x.shape[k]` of a driver argument x read once, into the local `x_s<k>`, at the
    driver's start: kernels then take sizes as integers (their text does not say which array
    a size came from), and the driver does not read a shape again for every buffer (each read
    is lowered anew: 142 of them took a third of the MLP step driver's compile)."""
    tree = ast.parse(source)
    driver = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "driver")
    args = {a.arg for a in driver.args.args}
    lines = source.splitlines()
    body_start = next(k for k, line in enumerate(lines) if line.startswith("def driver(")) + 1
    pattern = re.compile(r"\b([A-Za-z_][A-Za-z_0-9]*)\.shape\[(\d+)\]")
    used: dict[str, str] = {}

    def local(match: re.Match) -> str:
        name, k = match.group(1), match.group(2)
        if name not in args:
            return match.group(0)
        used.setdefault(f"{name}_s{k}", f"{name}.shape[{k}]")
        return f"{name}_s{k}"

    body = [line if line.lstrip().startswith("#") else pattern.sub(local, line)
            for line in lines[body_start:]]
    reads = [f"    {name} = {expr}" for name, expr in sorted(used.items())]
    return "\n".join(lines[:body_start] + reads + body) + "\n"


def _hoist_glue(block: list[ast.stmt]) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """(what the driver runs before the kernel, the kernel's statements): the block's reads of
    0-d constants (`k1_e = consts_f32[3]`) move above the call, so the kernel takes the value,
    not a position in this model's constant pack. Everything else stays in the kernel: the
    workspace views too (in the driver, each view's reshape and slice are lowered anew: with
    them hoisted the MLP step's driver compiled in 1.4 s, without in 0.45 s)."""
    head = [s for s in block if _is_constant_read(s)]
    return head, [s for s in block if not _is_constant_read(s)]


def _is_constant_read(stmt: ast.stmt) -> bool:
    return (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.Subscript)
            and isinstance(stmt.value.value, ast.Name)
            and stmt.value.value.id.startswith("consts_")
            and isinstance(stmt.value.slice, ast.Constant))


def _does_work(stmts: list[ast.stmt], library: set[str]) -> bool:
    """A loop, or a call of anything but a glue method (np.dot, gemm, np.empty, .fill...)."""
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, (ast.For, ast.While)):
                return True
            if isinstance(node, ast.Call) and not (
                    isinstance(node.func, ast.Attribute) and node.func.attr in GLUE_METHODS):
                if isinstance(node.func, ast.Name) and (node.func.id not in library
                                                        or node.func.id in GLUE_FUNCTIONS):
                    continue  # a builtin (max, range), a cast, a view
                return True
    return False


class _Rename:
    """The kernel's names: parameters a0.., locals t0.. in the order of their first use (so
    two blocks that differ only in names get one text); loop indices and globals kept."""

    def __init__(self, params: list[str], keep: set[str], order: list[str]):
        self.map = {name: f"a{k}" for k, name in enumerate(params)}
        for name in order:
            if name not in keep and not _LOOP_INDEX.fullmatch(name):
                self.rename(name)

    def rename(self, name: str) -> str:
        if name not in self.map:
            helper = _HELPER.fullmatch(name)  # `x_acc` stays the accumulator of x's new name
            if helper and helper.group(1) in self.map:
                self.map[name] = self.map[helper.group(1)] + helper.group(2)
            else:
                self.map[name] = f"t{sum(1 for v in self.map.values() if '_' not in v)}"
        return self.map[name]


class _ConditionalNames(_Names):
    """`_Names`, plus `maybe`: names assigned inside an `if` that were not assigned before it
    (a name the driver already holds keeps that value on the other path, so a kernel must
    receive it)."""

    def __init__(self) -> None:
        super().__init__()
        self.maybe: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        before = set(self.defined)
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)
        self.maybe |= self.defined - before


def _names(stmts: list[ast.stmt]) -> _Names:
    found = _ConditionalNames()
    for stmt in stmts:
        found.visit(stmt)
    return found


# CPython 3.11's ast module keeps its recursion-depth count per process, not per thread: two
# threads converting ASTs at once fail ("AST constructor recursion depth mismatch"). A build
# in the background (runtime/execution/background.py) outlines while the main thread may too.
_AST_LOCK = threading.Lock()


def outline_kernels(source: str, stamp: str, decorator: str) -> tuple[str, dict[str, Kernel]]:
    """(driver module, {kernel module name: Kernel}) for a module `render_module` wrote.

    `stamp` is the environment comment every generated module carries; `decorator` the
    kernels' `@numba.njit(...)` options besides `parallel` (added where a kernel has a
    prange loop) and `fastmath` (where it accumulates: reassociated float sums)."""
    with _AST_LOCK:
        return _outline_kernels(source, stamp, decorator)


def _outline_kernels(source: str, stamp: str, decorator: str) -> tuple[str, dict[str, Kernel]]:
    from runtime.execution.cache import KERNEL_PREFIX as MODULE_PREFIX

    source = _sizes_as_locals(source)
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
    available = {a.arg for a in driver.args.args} | _names(prologue).stores
    kernels: dict[str, Kernel] = {}
    out: list[str] = lines[:driver.body[0].lineno - 1]
    if prologue:
        out += lines[prologue[0].lineno - 1:prologue[-1].end_lineno]
    start = prologue[-1].end_lineno if prologue else driver.body[0].lineno - 1
    context = _Context(globals_, library, library_imports, stamp, decorator, lines, kernels,
                       MODULE_PREFIX)
    start = _outline_blocks(context, blocks, start, available,
                            _names([driver.body[-1]]).exposed, out)
    out += lines[start:]
    return _with_callers(out, driver, kernels, MODULE_PREFIX), kernels


@dataclass
class _Context:
    globals_: set[str]
    library: set[str]
    imports: dict[str, tuple[str, str]]
    stamp: str
    decorator: str
    lines: list[str]
    kernels: dict[str, Kernel]
    prefix: str


_STEP = re.compile(r"step_\d+")  # a scan's step (compiler/codegen/control.py)


def _loop_of(block: list[ast.stmt]) -> ast.For | ast.While | None:
    """The loop of a loop node's block (a scan's `for step_<k>`, a while's `while True`)."""
    if len(block) != 1:
        return None
    stmt = block[0]
    if isinstance(stmt, ast.For) and isinstance(stmt.target, ast.Name) \
            and _STEP.fullmatch(stmt.target.id):
        return stmt
    if isinstance(stmt, ast.While) and isinstance(stmt.test, ast.Constant) \
            and stmt.test.value is True:
        return stmt
    return None


def _outline_blocks(ctx: _Context, blocks: list[list[ast.stmt]], start: int,
                    available: set[str], later: set[str], out: list[str]) -> int:
    """Append the driver lines for `blocks` (from line `start` on) to `out`, each block that
    works a kernel call; a loop node's loop stays in the driver and its body's blocks are
    outlined in turn (so each body kernel is one module, called every step). The line
    after the last block."""
    lines = ctx.lines
    names = [_names(b) for b in blocks]
    read_later = []
    for found in reversed(names):
        read_later.append(set(later))
        later = later | found.exposed
    read_later.reverse()
    for block, later_reads in zip(blocks, read_later):
        head, work = _hoist_glue(block)
        stop = block[-1].end_lineno
        loop = _loop_of(block)
        if loop is not None:
            inner_prologue, inner = _blocks(loop.body, lines)
            out += lines[start:loop.body[0].lineno - 1]
            inner_start = loop.body[0].lineno - 1
            if inner_prologue:
                out += lines[inner_start:inner_prologue[-1].end_lineno]
                inner_start = inner_prologue[-1].end_lineno
            every = _names(loop.body)  # the next step reads what this one wrote
            inner_later = later_reads | every.exposed | {
                n for b in inner for n in _names(b).exposed}
            inner_available = available | every.stores | _names([loop]).stores
            inner_start = _outline_blocks(ctx, inner, inner_start, inner_available,
                                          inner_later, out)
            out += lines[inner_start:stop]
        elif not work or not _does_work(work, ctx.library):
            out += lines[start:stop]
        else:
            first = block[0].lineno - 1
            while first > start and lines[first - 1].strip().startswith("#"):
                first -= 1  # the node's comments stay above its call
            out += lines[start:first]
            kernel = _outline(work, available | _names(head).stores, later_reads,
                              ctx.globals_, ctx.imports, ctx.stamp, ctx.decorator, lines)
            from runtime.execution.cache import cached_text, module_name

            name = module_name(cached_text(kernel.text), ctx.prefix)
            ctx.kernels[name] = kernel
            out += lines[first:block[0].lineno - 1]
            indent = " " * block[0].col_offset
            out += [indent + ast.unparse(stmt) for stmt in head]
            call = f"{KERNEL_PREFIX}{name[len(ctx.prefix):][:10]}({', '.join(kernel.params)})"
            returned = ", ".join(kernel.returns)
            out.append(f"{indent}{returned} = {call}" if returned else f"{indent}{call}")
        available |= _names(block).stores
        start = stop
    return start


def _comment(line: str) -> str:
    return "  " + line[line.index("#"):] if "#" in line else ""


def _renamed_text(work: list[ast.stmt], lines: list[str], names: dict[str, str]) -> str:
    """The work's lines as codegen wrote them (its spacing and trailing comments: "# in place
    (donated)"), dedented to a function body, whole-line comments left in the driver, each
    name token renamed (attributes, after a ".", are not names)."""
    indent = work[0].col_offset
    text = "\n".join(line[indent:] for s in work for line in lines[s.lineno - 1:s.end_lineno]
                     if not line.lstrip().startswith("#")) + "\n"
    out, previous = [], None
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.NAME and token.string in names and previous != ".":
            token = token._replace(string=names[token.string])
        out.append(token)
        if token.type not in (tokenize.NL, tokenize.COMMENT):
            previous = token.string
    return tokenize.untokenize(out).rstrip("\n")


def _outline(work: list[ast.stmt], available: set[str], later_reads: set[str],
             globals_: set[str], imports: dict[str, tuple[str, str]], stamp: str,
             decorator: str, lines: list[str]) -> Kernel:
    found = _names(work)
    order = list(dict.fromkeys(n.id for s in work for n in ast.walk(s)
                               if isinstance(n, ast.Name)))
    params = [n for n in order if n in found.exposed | found.maybe
              and n in available and n not in globals_ and not _LOOP_INDEX.fullmatch(n)]
    returns = sorted(found.stores & later_reads)
    rename = _Rename(params, globals_, order)
    renamed_returns = [rename.map[n] for n in returns]
    text_body = _renamed_text(work, lines, rename.map)
    used = set(order)  # globals keep their names
    by_module: dict[tuple[str, str], list[str]] = {}
    for name in sorted(used & set(imports)):
        by_module.setdefault(imports[name], []).append(name)
    needed = [f"from {module} import {', '.join(fns)}{comment}"
              for (module, comment), fns in sorted(by_module.items())]
    options = [decorator]
    if "prange" in text_body:
        from compiler.kernels.parallel import parallel_options

        options.append(f"parallel={parallel_options()!r}")
    if any(isinstance(n, ast.AugAssign) for s in work for n in ast.walk(s)):
        options.append("fastmath={'reassoc'}")
    header = ['"""chainjit kernel (edit nothing: the file name is a hash of this text)."""',
              f"# {stamp}", "import numpy as np", "import numba", *needed, "", "",
              f"@numba.njit({', '.join(options)})",
              f"def kernel({', '.join(f'a{k}' for k in range(len(params)))}):"]
    indented = ["    " + line for line in text_body.splitlines()]
    if renamed_returns:
        indented.append(f"    return {', '.join(renamed_returns)}")
    return Kernel("\n".join(header + indented) + "\n", params, returns)


def _with_callers(lines: list[str], driver: ast.FunctionDef, kernels: dict[str, Kernel],
                  prefix: str) -> str:
    """Insert the kernel callers (and their import) above the driver's decorator, and drop the
    library imports only kernels use (importing compiler/kernels/blas.py compiles a helper)."""
    at = driver.decorator_list[0].lineno - 1
    body = re.sub(r"#.*", "", "\n".join(lines[at:]))
    for k in range(at):
        line = lines[k]
        if line.startswith("from compiler.kernels."):
            names = line.split(" import ", 1)[1].split("#")[0]
            used = [n.strip() for n in names.split(",")
                    if re.search(rf"\b{n.strip()}\b", body)]
            if not used:
                lines[k] = ""
            elif len(used) < len(names.split(",")):
                lines[k] = line.split(" import ")[0] + " import " + ", ".join(used) + \
                    _comment(line)
    while at > 0 and not lines[at - 1].strip():
        at -= 1
    callers = ["from runtime.execution.linking import kernel_call"] if kernels else []
    callers += [f"{KERNEL_PREFIX}{name[len(prefix):][:10]} = kernel_call({name!r}, "
                f"{len(k.params)})" for name, k in sorted(kernels.items())]
    return "\n".join(lines[:at] + callers + lines[at:]) + "\n"
