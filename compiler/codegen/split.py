"""Codegen's last step: a long driver body is cut into part functions the driver calls in order.

Takes the module text `render_module` wrote and gives the same module in which the body of a
long `driver` (after its prologue: workspace offsets and checks) is a sequence of calls of
`driver_part<k>` functions, each holding a run of whole node blocks, their IR comments
included. A part takes the values it reads that were made before it (driver arguments, the
prologue's offsets, earlier parts' results) and returns those that later parts or the
driver's `return` read; arrays pass by reference, so what a part writes into a buffer is seen
by the parts after it.

Why: Numba and LLVM take time that grows faster than linearly with the size of one function
(Numba's liveness and reaching-definition analyses, LLVM's function passes): the transformer
training step, ~2,000 lines in one driver, compiled in 70 s of CPU, in 35 s as 11 parts. And
in one long function LLVM stops inlining the float32 maths of compiler/kernels/fastmath.py: each
call's error check is a branch weighted unlikely, so the block frequency decays along the
function until later call sites count as cold (below 2% of the entry frequency) and stay
calls, and their loops do not vectorise (the transformer's GELU loop ran 10x slower). So a
node block that calls a fastmath function starts a new part, near that part's entry. (Only
fastmath: a new part per matmul-kernel call made the transformer step 27 parts, not 11, and
its cold compile 66 s, not 53.)

Parts are compiled when the driver first is and only inside it (no Python wrapper, no disk
cache of their own: the driver's cached machine code holds them).
"""

from __future__ import annotations

import ast

# A part holds node blocks until it has about this many statement lines. A part costs a fixed
# amount of compile time, and the functions it calls (fastmath, conv kernels) are optimised
# again in every part that calls them: below about six parts' worth of lines (the CNN and MLP
# steps) one function compiled sooner.
PART_LINES = 80
MIN_PARTS = 6
PART_PREFIX = "driver_part"  # "driver" is reserved: no IR name starts with it
PART_OPTIONS = ("no_cpython_wrapper=True", "no_cfunc_wrapper=True")


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


def _names(stmts: list[ast.stmt]) -> _Names:
    found = _Names()
    for stmt in stmts:
        found.visit(stmt)
    return found


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


def _size(stmts: list[ast.stmt]) -> int:
    return sum(s.end_lineno - s.lineno + 1 for s in stmts)


def _calls_any(stmts: list[ast.stmt], functions: set[str]) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in functions
               for s in stmts for n in ast.walk(s))


def _group(blocks: list[list[ast.stmt]], fast: set[str], part_lines: int) -> list[list]:
    parts: list[list[ast.stmt]] = []
    for block in blocks:
        if parts and (_size(parts[-1]) >= part_lines or _calls_any(block, fast)):
            parts.append([])
        if not parts:
            parts.append([])
        parts[-1].extend(block)
    return parts


def _part_decorator(driver_decorator: ast.expr, uses_prange: bool) -> str:
    """The driver's jit options for a part: no disk cache, no wrappers, `parallel` only where
    the part has a prange loop."""
    call = driver_decorator
    assert isinstance(call, ast.Call), "the driver's decorator is numba.njit(...)"
    keywords = [k for k in call.keywords if k.arg != "cache"
                and (k.arg != "parallel" or uses_prange)]
    options = [ast.unparse(k) for k in keywords] + ["cache=False", *PART_OPTIONS]
    return f"@{ast.unparse(call.func)}({', '.join(options)})"


def split_driver(source: str, part_lines: int = PART_LINES) -> str:
    r"""`source` with a long driver body cut into part functions; short ones unchanged.

    >>> body = "".join(f"\n\n    # node {k}\n    v{k} = v{k - 1} + 1.0" for k in range(1, 300))
    >>> text = "import numba\n\n@numba.njit(cache=True)\ndef driver(v0):" + body
    >>> out = split_driver(text + "\n\n    return (v299, )\n", part_lines=40)
    >>> out.count("def driver_part"), "v40 = driver_part0(v0)" in out
    (8, True)
    """
    lines = source.splitlines()
    tree = ast.parse(source)
    driver = next((n for n in tree.body if isinstance(n, ast.FunctionDef)
                   and n.name == "driver"), None)
    if driver is None or not isinstance(driver.body[-1], ast.Return):
        return source
    prologue, blocks = _blocks(driver.body[:-1], lines)
    if sum(_size(b) for b in blocks) < MIN_PARTS * part_lines:
        return source
    fast = {alias.asname or alias.name for n in tree.body if isinstance(n, ast.ImportFrom)
            and n.module == "compiler.kernels.fastmath" for alias in n.names}
    parts = _group(blocks, fast, part_lines)
    names = [_names(part) for part in parts]
    # what each part must return: the names read after it that it writes
    read_later: list[set[str]] = []
    later = _names([driver.body[-1]]).exposed
    for found in reversed(names):
        read_later.append(set(later))
        later = later | found.exposed
    read_later.reverse()
    available = [a.arg for a in driver.args.args] + sorted(_names(prologue).stores)
    head = lines[:driver.decorator_list[0].lineno - 1]
    functions, calls = [], []
    start = prologue[-1].end_lineno if prologue else driver.body[0].lineno - 1
    for k, (part, found) in enumerate(zip(parts, names)):
        stop = part[-1].end_lineno
        inputs = [n for n in dict.fromkeys(available) if n in found.exposed]
        outputs = sorted(found.stores & read_later[k])
        text = "\n".join(lines[start:stop])
        returned = ", ".join(outputs)
        functions += ["", "", _part_decorator(driver.decorator_list[0], "prange" in text),
                      f"def {PART_PREFIX}{k}({', '.join(inputs)}):",
                      text.lstrip("\n"), f"    return {returned}" if outputs else ""]
        call = f"{PART_PREFIX}{k}({', '.join(inputs)})"
        calls.append(f"    {returned} = {call}" if outputs else f"    {call}")
        available += outputs
        start = stop
    driver_head = lines[driver.decorator_list[0].lineno - 1:driver.body[0].lineno - 1]
    kept = lines[driver.body[0].lineno - 1:prologue[-1].end_lineno] if prologue else []
    tail = lines[start:]
    return "\n".join([*head, *functions, "", "", *driver_head, *kept, *calls, *tail]) + "\n"
