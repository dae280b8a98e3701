"""Errors raised while tracing, worded for the user: their source line, the op, the shapes and
what would fix it. `user_source()` finds the first stack frame outside chainjit and NumPy."""

from __future__ import annotations

import linecache
import os
import sys

import numpy as np

from ir.graph import Source

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LIBRARY_DIRS = tuple(
    os.path.join(_PACKAGE_ROOT, pkg) + os.sep for pkg in ("ir", "compiler", "runtime")
) + (os.path.dirname(np.__file__) + os.sep,)


def user_source() -> Source | None:
    """The innermost frame of the user's code (not chainjit's or NumPy's)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_LIBRARY_DIRS) and not filename.startswith("<frozen"):
            return Source(filename, frame.f_lineno, frame.f_code.co_name)
        frame = frame.f_back
    return None


def traceback_source(tb) -> Source | None:
    """The innermost frame of the user's code in a traceback (where an exception arose)."""
    found = None
    while tb is not None:
        code = tb.tb_frame.f_code
        if not code.co_filename.startswith(_LIBRARY_DIRS):
            found = Source(code.co_filename, tb.tb_lineno, code.co_name)
        tb = tb.tb_next
    return found


def describe_source(source: Source | None) -> str:
    if source is None:
        return "(source unknown)"
    code = linecache.getline(source.file, source.line).strip()
    where = f"{source.file}:{source.line}, in {source.function}"
    return f"{where}\n    {code}" if code else where


class TraceError(Exception):
    """A problem found while tracing the user's function; the message names the line."""

    def __init__(self, message: str, source: Source | None = None, fix: str = ""):
        self.source = source if source is not None else user_source()
        self.reason = message
        self.fix = fix
        text = f"{message}\n  at {describe_source(self.source)}"
        if fix:
            text += f"\n  fix: {fix}"
        super().__init__(text)


class TracerConversionError(TraceError, TypeError):
    """A traced value used where Python needs a concrete value (if, float(), bool(), ...)."""


class UnsupportedError(TraceError, NotImplementedError):
    """A NumPy function or feature chainjit cannot trace."""


class ShapeMismatchError(TraceError, ValueError):
    """Operands whose shapes or dtypes do not fit the op."""
