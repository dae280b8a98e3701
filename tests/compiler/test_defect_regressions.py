"""The defects of issue 16, as a new user met them (each fixed where it lived)."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile, grad, nn, value_and_grad
from compiler.nn import LabelRangeError

RNG = np.random.default_rng(0)


def test_concatenate_gradient_under_compile():
    a, b = RNG.random((2, 3)), RNG.random((2, 3))
    fn = grad(lambda a, b: np.sum(np.sin(np.concatenate([a, b], axis=0))), argnums=(0, 1))
    got = compile(fn)(a, b)
    np.testing.assert_allclose(got[0], np.cos(a))
    np.testing.assert_allclose(got[1], np.cos(b))


def test_vector_vector_matmul_traces():
    assert compile(lambda x: x @ x)(np.ones(3)) == 3.0


def test_gradient_of_dot_on_vectors():
    x, y = RNG.normal(size=3), RNG.normal(size=3)
    for fn in (grad(lambda x, y: np.dot(x, y), argnums=(0, 1)),
               compile(grad(lambda x, y: np.dot(x, y), argnums=(0, 1)))):
        gx, gy = fn(x, y)
        np.testing.assert_allclose(gx, y)
        np.testing.assert_allclose(gy, x)


def test_hessian_vector_product_through_a_vector_product():
    x, v = RNG.normal(size=3), RNG.normal(size=3)
    loss = lambda x: (x @ x) * np.sum(x)  # noqa: E731
    hvp = lambda x: grad(lambda x: np.dot(grad(loss)(x), v))(x)  # noqa: E731
    # H = 2 sum(x) I + 2 (x 1ᵀ + 1 xᵀ)
    expected = 2 * np.sum(x) * v + 2 * (x * np.sum(v) + np.ones(3) * (x @ v))
    np.testing.assert_allclose(hvp(x), expected)
    np.testing.assert_allclose(compile(hvp)(x), expected)


def test_nested_compiled_transform_closing_over_an_outer_value():
    g = lambda x: x * compile(grad(lambda y: x * y))(2.0)  # noqa: E731  (g(x) = x²)
    assert compile(g)(1.5) == 2.25
    assert compile(grad(g))(1.5) == 3.0
    assert grad(g)(1.5) == 3.0


def test_nested_compiled_function_called_with_constants_records_into_the_outer_trace():
    inner = compile(lambda y: y * 3.0)
    outer = compile(lambda x: x + inner(np.ones(2)))
    np.testing.assert_allclose(outer(np.ones(2)), [4.0, 4.0])


def test_cross_entropy_rejects_a_label_past_the_classes_in_a_plain_compile():
    loss = compile(lambda logits, y: nn.cross_entropy(logits, y))
    logits = np.zeros((2, 3))
    assert np.isclose(loss(logits, np.array([0, 2])), np.log(3))  # the fast path is now set
    with pytest.raises(LabelRangeError, match=r"\[0, 3\)"):
        loss(logits, np.array([0, 3]))
    with pytest.raises(LabelRangeError):
        compile(value_and_grad(lambda lg, y: nn.cross_entropy(lg, y)))(logits, np.array([-1, 0]))


def test_second_derivative_of_x_to_the_zero_is_zero():
    assert grad(grad(lambda x: x ** 0.0))(0.0) == 0.0
    assert grad(grad(lambda x, y: x ** y))(0.0, 0.0) == 0.0
    assert compile(grad(grad(lambda x: x ** 0.0)))(0.0) == 0.0


def test_transpose_axes_keyword():
    x = RNG.normal(size=(2, 3, 4))
    np.testing.assert_array_equal(compile(lambda x: np.transpose(x, axes=(1, 2, 0)))(x),
                                  np.transpose(x, axes=(1, 2, 0)))


@pytest.mark.parametrize("index", [np.s_[3, 2:, [1, 3]], np.s_[::-1], np.s_[1:, ::-2, 4:0:-1],
                                   np.s_[[0, 1], None, [1, 2]], np.s_[..., [0, -1], 1:]])
def test_numpy_indexing_forms(index):
    x = RNG.normal(size=(4, 5, 6))
    got = compile(lambda x: x[index], backend="interpreter")(x)
    np.testing.assert_array_equal(got, x[index])
