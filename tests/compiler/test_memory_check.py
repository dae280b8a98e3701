"""An intermediate too large for memory is reported when the executable is built, with its IR
node, source line and bytes from the buffer plan (not as a MemoryError from the driver)."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile, memory_check
from compiler.memory_check import AllocationError


def _outer_then_matmul(x, y, w):
    big = np.tanh(x[:, None] * y[None, :])  # the-big-one
    return np.sum(big @ w)


def _marker_line() -> int:
    with open(__file__) as source:
        return next(k for k, line in enumerate(source, 1) if "# the-big-one" in line)


def test_an_intermediate_larger_than_memory_is_reported_at_build_time(monkeypatch):
    monkeypatch.setattr(memory_check, "available_memory", lambda: 100_000)
    x, y, w = np.ones(200), np.ones(300), np.ones((300, 2))
    with pytest.raises(AllocationError) as info:
        compile(_outer_then_matmul, backend="interpreter")(x, y, w)
    message = str(info.value)
    assert "f64[200,300]" in message and "480000 bytes" in message, message
    assert f"test_memory_check.py:{_marker_line()}" in message, message
    assert "buffer plan" in message and "fix:" in message


def test_a_huge_real_intermediate_fails_before_any_allocation():
    n = 2_000_000  # an outer product of 2e6 x 2e6 float64: 32 TB
    x = np.ones(n)
    with pytest.raises(MemoryError) as info:
        compile(lambda x: x[:, None] * x[None, :], backend="interpreter")(x)
    assert isinstance(info.value, AllocationError)
    assert "returns f64[2000000,2000000]" in str(info.value)


def test_a_large_value_fused_away_is_not_reported(monkeypatch):
    monkeypatch.setattr(memory_check, "available_memory", lambda: 100_000)
    x, y = np.ones(200), np.ones(300)
    value = compile(lambda x, y: np.sum(x[:, None] * y[None, :]), backend="interpreter")(x, y)
    assert value == 60000.0
