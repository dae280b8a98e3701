"""Bad input raises at trace time with the user's line, the op, the shapes and a fix."""

import numpy as np
import pytest

from compiler import compile, nn
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


SHAPE_ERRORS = {
    "matmul": (lambda x, w: x @ w, (np.ones((2, 3)), np.ones((4, 5)))),
    "batched matmul": (lambda x, w: x @ w, (np.ones((2, 2, 3)), np.ones((3, 3, 4)))),
    "broadcast": (lambda x, y: x * y, (np.ones((2, 3)), np.ones(4))),
    "concatenate": (lambda x, y: np.concatenate([x, y], axis=0),
                    (np.ones((2, 3)), np.ones((2, 4)))),
    "concatenate axis": (lambda x: np.concatenate([x, x], axis=2), (np.ones((2, 3)),)),
    "reshape": (lambda x: x.reshape(4, 2), (np.ones((2, 3)),)),
    "reshape -1": (lambda x: x.reshape(4, -1), (np.ones((2, 3)),)),
    "split": (lambda x: np.split(x, 2, axis=1)[0], (np.ones((2, 3)),)),
    "squeeze": (lambda x: np.squeeze(x, axis=0), (np.ones((2, 3)),)),
    "sum axis": (lambda x: np.sum(x, axis=2), (np.ones((2, 3)),)),
    "transpose": (lambda x: np.transpose(x, (0, 0)), (np.ones((2, 3)),)),
    "where": (lambda c, x: np.where(c > 0, x, 0.0), (np.ones(3), np.ones((2, 4)))),
    "conv2d": (lambda x, w: nn.conv2d(x, w), (np.ones((1, 2, 4, 4)), np.ones((1, 3, 2, 2)))),
}


@pytest.mark.parametrize("case", sorted(SHAPE_ERRORS))
def test_every_shape_error_says_what_would_fix_it(case):
    fn, args = SHAPE_ERRORS[case]
    message = raised(fn, *args, error=ShapeMismatchError)
    assert "\n  fix: " in message, message
    assert "test_errors.py:" in message, message  # the user's line


def _two_layer(params, x):
    return np.sum(x @ params["w"] + params["b"])  # reads-b


def test_missing_pytree_key_names_the_argument_and_the_structure():
    params = {"w": np.ones((3, 2)), "b": np.zeros(2)}
    f = compile(_two_layer, backend="interpreter")
    f(params, np.ones((4, 3)))
    with pytest.raises(TraceError) as info:
        f({"w": params["w"]}, np.ones((4, 3)))
    message = str(info.value)
    assert "argument params has no key 'b'" in message, message
    assert "{'w': f64[3,2]}" in message and "{'b': f64[2], 'w': f64[3,2]}" in message
    assert_names_line(message, "reads-b")
    assert "fix:" in message


def test_missing_pytree_key_under_grad_names_the_argument():
    from compiler import grad

    with pytest.raises(TraceError) as info:
        compile(grad(_two_layer), backend="interpreter")({"w": np.ones((3, 2))}, np.ones((4, 3)))
    assert "argument params has no key 'b'" in str(info.value)


def test_key_error_unrelated_to_the_arguments_is_left_alone():
    def lookup(x):
        return x * {"a": 1.0}["b"]

    with pytest.raises(KeyError):
        compile(lookup, backend="interpreter")(np.ones(2))
