"""Regression tests for generated code, one per bug fixed."""

import numpy as np

from compiler import compile


def test_reshape_with_derived_dim_of_intermediate_sizes_workspace_from_inputs():
    # A reshape whose target has one dim that is no input's dim derives it from the source's
    # size. The workspace prologue sizes later buffers with that expression, before the source
    # exists, so it must be built from input shapes (it read `source.size`: NameError in Numba).
    def f(x, w):
        y = np.tanh(x @ w)  # an intermediate, f32[2,12]
        z = y.reshape(4, 6)  # 4 is no input's dim
        return np.sum(np.exp(z) @ np.ones((6, 5), np.float32), axis=1)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6)).astype(np.float32)
    w = rng.normal(size=(6, 12)).astype(np.float32)
    expected = compile(f, backend="interpreter")(x, w)
    np.testing.assert_allclose(compile(f)(x, w), expected, rtol=1e-5)
