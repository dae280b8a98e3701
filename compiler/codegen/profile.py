"""The profiler's driver: the generated driver with a clock read around every kernel call.

`instrument(source)` takes a driver module as codegen wrote it (`Generated.source`, comments
included) and gives the same module with one more driver argument, `prof_t` (int64, one
slot per kernel call plus one for the whole driver), and each statement that calls a kernel
(`kern_<hash>(...)`: every loop nest, BLAS call and convolution, compiler/codegen/outline.py)
bracketed by reads of the time-stamp counter (compiler/kernels/clock.py):

    prof_c = clock()
    bg = kern_4a62bd335e(ws_f32, wo_f32_0, g_s0, f_s0, bd, bf)
    prof_t[7] += clock() - prof_c

The last slot takes the driver's whole body (its glue: views, scalar arithmetic, the deferred
donated writes, is the difference). The kernels are the same modules the driver calls, so
nothing is compiled again but this driver. Text only, like the rest of codegen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CALL = re.compile(r"^(\s+)(?:[\w, ]+ = )?(kern_[0-9a-f]{10})\(.*\)\s*$")
_DEF = re.compile(r"^def driver\((.*)\):$")
_RETURN = re.compile(r"^    return \(")
# a node's comment in the driver: `    # name:type ... = op ...` (its fused body's lines are
# indented further, `    #   `)
_NODE_COMMENT = re.compile(r"^    # [a-z]+:\w+\[")
_TOP_LEVEL = re.compile(r"^    \S")  # the driver body's own statements, not a loop's body
CLOCK_IMPORT = "from compiler.kernels.clock import clock"


@dataclass
class Call:
    """One kernel call of the driver: its caller's name, the position of its node in the
    graph's node list (None for the driver's own glue after the nodes: the writes of donated
    0-d values) and the IR lines above it."""

    caller: str
    node: int | None
    comments: list[str]


def instrument(source: str) -> tuple[str, list[Call], int]:
    """(the instrumented driver module, its kernel calls in the order of their slots, how
    many node comments the driver has: one per graph node, as codegen writes them)."""
    lines = source.splitlines()
    start = next(k for k, line in enumerate(lines) if _DEF.match(line))
    out = lines[:start]
    at = max(k for k, line in enumerate(out) if line.startswith(("import ", "from "))) + 1
    out.insert(at, CLOCK_IMPORT)
    params = _DEF.match(lines[start]).group(1)
    out += [f"def driver({params}, prof_t):", "    prof_s = clock()"]
    calls: list[Call] = []
    node, comments, seen, block_start = -1, [], -1, False
    for line in lines[start + 1:]:
        if not line.strip():
            block_start = True  # a node's block starts with its comment (driver.generate)
        elif _NODE_COMMENT.match(line):
            seen += 1
            node, comments, block_start = seen, [line.strip()[2:]], False
        elif block_start and _TOP_LEVEL.match(line):  # glue after the nodes (donated writes)
            node, comments, block_start = -1, [], False
            if line.lstrip().startswith("#"):
                comments.append(line.strip()[2:])
        elif block_start:  # a block inside a loop node's body: still that node's
            block_start = False
        elif line.lstrip().startswith("#") and comments:
            comments.append(line.strip()[2:])
        match = _CALL.match(line)
        if match:
            indent = match.group(1)
            slot = len(calls)
            calls.append(Call(match.group(2), node if node >= 0 else None,
                              list(comments) or [line.strip()]))
            out += [f"{indent}prof_c = clock()", line,
                    f"{indent}prof_t[{slot}] += clock() - prof_c"]
            continue
        if _RETURN.match(line):
            out.append("    prof_t[PROF_TOTAL] += clock() - prof_s")
        out.append(line)
    text = "\n".join(out).replace("PROF_TOTAL", str(len(calls))) + "\n"
    return text, calls, seen + 1
