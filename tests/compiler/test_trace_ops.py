"""Every traceable operation, traced and evaluated by the interpreter, against NumPy eager."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from compiler import compile
from tests.compiler.op_specs import OP_SPECS, make_inputs

SPECS = {spec.name: spec for spec in OP_SPECS}


def run_both(fn, args):
    expected = fn(*args)
    got = compile(fn, backend="interpreter")(*args)
    return np.asarray(expected), np.asarray(got)


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_op_forward_matches_numpy(name, dtype):
    spec = SPECS[name]
    rng = np.random.default_rng(0)
    args = make_inputs(spec, rng, dtype)
    expected, got = run_both(spec.fn, args)
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype, f"{name}: {got.dtype} != NumPy's {expected.dtype}"
    tol = spec.tol if dtype == np.float32 else spec.tol64
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


BROADCASTING = sorted(name for name, spec in SPECS.items() if spec.broadcasts)


@pytest.mark.parametrize("name", BROADCASTING)
@given(data=st.data())
def test_op_forward_broadcasting_shapes(name, data):
    spec = SPECS[name]
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=len(spec.shapes),
                                                         max_dims=3, max_side=4))
    seed = data.draw(st.integers(0, 2**16))
    args = make_inputs(spec, np.random.default_rng(seed), np.float32, shapes.input_shapes)
    expected, got = run_both(spec.fn, args)
    assert got.shape == expected.shape == shapes.result_shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "fn, expected_dtype",
    [
        (lambda x: x * 2.0, np.float32),  # Python float is weak: float32 stays float32
        (lambda x: x + 1, np.float32),
        (lambda x: x.astype(np.int32) + 1, np.int32),
        (lambda x: x.astype(np.int32) / 2, np.float64),  # true division of ints
        (lambda x: x.astype(np.int32) * 0.5, np.float64),
        (lambda x: x + np.float64(1.0), np.float64),  # NumPy scalars are strong
        (lambda x: x + np.ones(3), np.float64),
        (lambda x: np.exp(x.astype(np.int64)), np.float64),
        (lambda x: (x > 0).sum(), np.int64),
    ],
)
def test_promotion_follows_numpy(fn, expected_dtype):
    x = np.linspace(-1, 1, 3).astype(np.float32)
    expected, got = run_both(fn, [x])
    assert expected.dtype == expected_dtype
    assert got.dtype == expected_dtype


def test_python_scalar_argument_is_weak():
    f = compile(lambda x, scale: x * scale, backend="interpreter")
    x = np.ones(3, np.float32)
    assert f(x, 0.5).dtype == np.float32
    np.testing.assert_allclose(f(x, 0.5), 0.5)
    assert len(f._traces) == 1
    f(x, 0.25)  # the value is traced, not baked in: no new trace
    assert len(f._traces) == 1


def test_static_argument_retraces_per_value():
    f = compile(lambda x, n: x.reshape(n, -1), static_argnums=1, backend="interpreter")
    x = np.arange(12.0)
    assert f(x, 3).shape == (3, 4)
    assert f(x, 2).shape == (2, 6)
    assert len(f._traces) == 2


def test_pytrees_in_and_out():
    from collections import namedtuple

    Pair = namedtuple("Pair", "a b")

    def fn(tree):
        return {"sum": tree["x"][0] + tree["x"][1], "pair": Pair(tree["y"].a * 2, None)}

    tree = {"x": [np.ones(2), np.full(2, 3.0)], "y": Pair(np.arange(3.0), None)}
    out = compile(fn, backend="interpreter")(tree)
    assert set(out) == {"sum", "pair"}
    np.testing.assert_allclose(out["sum"], 4.0)
    assert isinstance(out["pair"], Pair) and out["pair"].b is None
    np.testing.assert_allclose(out["pair"].a, [0, 2, 4])


def test_iteration_and_len_over_leading_axis():
    f = compile(lambda x: sum(row * i for i, row in enumerate(x)) + len(x), backend="interpreter")
    x = np.arange(6.0).reshape(3, 2)
    np.testing.assert_allclose(f(x), sum(row * i for i, row in enumerate(x)) + 3)
