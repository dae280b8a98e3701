"""Bad input raises at trace time with the user's line, the op, the shapes and a fix."""

import numpy as np
import pytest

from compiler import compile
from compiler.errors import (
    ShapeMismatchError,
    TraceError,
    TracerConversionError,
    UnsupportedError,
)


def line_of(marker: str) -> int:
    """The line in this file carrying `# <marker>`."""
    with open(__file__) as source:
        for number, text in enumerate(source, 1):
            if text.rstrip().endswith(f"# {marker}"):
                return number
    raise AssertionError(marker)


def raised(fn, *args, error=TraceError):
    with pytest.raises(error) as info:
        compile(fn, backend="interpreter")(*args)
    return str(info.value)


def assert_names_line(message: str, marker: str) -> None:
    assert f"{__file__}:{line_of(marker)}" in message, message


X = np.ones((32, 64), np.float32)
W = np.ones((32, 10), np.float32)


def test_matmul_inner_dimension_mismatch():
    def layer(x, w):
        return x @ w  # matmul-mismatch

    message = raised(layer, X, W, error=ShapeMismatchError)
    assert_names_line(message, "matmul-mismatch")
    assert "f32[32,64] @ f32[32,10]" in message and "64 != 32" in message
    assert "fix:" in message


def test_broadcasting_mismatch():
    def add_bias(x, b):
        return x + b  # broadcast-mismatch

    message = raised(add_bias, X, np.ones(10, np.float32), error=ShapeMismatchError)
    assert_names_line(message, "broadcast-mismatch")
    assert "f32[32,64]" in message and "f32[10]" in message and "broadcast" in message


def test_unsupported_numpy_function_names_it_and_neighbours():
    def cumulative(x):
        return np.nansum(x)  # unsupported

    message = raised(cumulative, X, error=UnsupportedError)
    assert_names_line(message, "unsupported")
    assert "np.nansum is not supported" in message
    assert "sum" in message.split("fix:")[1]


def test_unsupported_ufunc_names_it():
    def spacing(x):
        return np.spacing(x)  # unsupported-ufunc

    message = raised(spacing, X, error=UnsupportedError)
    assert_names_line(message, "unsupported-ufunc")
    assert "np.spacing" in message


def test_python_if_on_traced_value():
    def relu_branchy(x):
        if x.sum() > 0:  # control-flow
            return x
        return -x

    message = raised(relu_branchy, X, error=TracerConversionError)
    assert_names_line(message, "control-flow")
    assert "np.where" in message and "static_argnums" in message


def test_float_of_traced_value():
    def scale(x):
        return x * float(x.max())  # float-call

    message = raised(scale, X, error=TracerConversionError)
    assert_names_line(message, "float-call")
    assert "float()" in message


def test_non_array_argument():
    def f(x, mode):
        return x

    message = raised(f, X, "train")
    assert "argument mode is a str" in message
    assert "static_argnums" in message


def test_unsupported_dtype_argument():
    message = raised(lambda x: x, np.ones(3, np.float16))
    assert "float16" in message and "astype" in message


def test_mutation_of_traced_array():
    def update(x):
        x[0] = 1.0  # mutation
        return x

    message = raised(update, X, error=TracerConversionError)
    assert_names_line(message, "mutation")
    assert "immutable" in message and "np.where" in message


def test_mutation_through_out_argument():
    def update(x):
        return np.add(x, 1.0, out=x)  # out-argument

    message = raised(update, X, error=TracerConversionError)
    assert_names_line(message, "out-argument")


def test_reshape_to_wrong_size():
    def flat(x):
        return x.reshape(10, -1)  # bad-reshape

    message = raised(flat, X, error=ShapeMismatchError)
    assert_names_line(message, "bad-reshape")
    assert "f32[32,64]" in message


def test_error_inside_library_code_names_callers_line():
    from compiler import numpy_api

    def f(x):
        return numpy_api.concatenate([x, x[:, :3].T])  # library-call

    message = raised(f, X, error=ShapeMismatchError)
    assert_names_line(message, "library-call")
