"""`Compiled.compare`: compiled code against the interpreter, node by node; a deliberately
broken emitter must be localised to its IR node and source line."""

from __future__ import annotations

import inspect

import numpy as np

from compiler import compile
from compiler.codegen import loops as codegen_kernels
from ir.ops import Op


def _model(x, w):
    h = np.tanh(x @ w)
    s = np.sin(h) * 2.0  # the line a broken sin emitter must be traced back to
    return np.sum(np.exp(s) + h)


def _line_of(text: str) -> int:
    lines, first = inspect.getsourcelines(_model)
    return first + next(k for k, line in enumerate(lines) if text in line)


ARGS = (np.random.default_rng(0).normal(size=(4, 3)), np.random.default_rng(1).normal(size=(3, 5)))


def test_compare_reports_agreement_for_a_correct_build():
    report = compile(_model).compare(*ARGS)
    assert report.ok, str(report)
    assert "agree" in str(report)


def test_compare_localises_a_broken_emitter_to_its_node_and_line(monkeypatch):
    monkeypatch.setitem(codegen_kernels.NUMPY_UNARY, Op.SIN, "np.cos")  # sin emitted as cos
    report = compile(_model).compare(*ARGS)
    assert not report.ok
    d = report.difference
    assert (d.inner or d.node).op is Op.SIN, str(report)
    assert d.source.line == _line_of("np.sin(h)"), str(report)
    text = str(report)
    assert "sin" in text and f":{d.source.line}" in text and "min" in text and "max" in text
