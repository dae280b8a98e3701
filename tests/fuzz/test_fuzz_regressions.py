"""Programs the differential fuzzer (or issue 16) found wrong, each checked the fuzzer's four
ways (tests/fuzz/check.py): Numba and interpreter values against NumPy, Numba gradients
against the interpreter's, float64 gradients against finite differences, and an HVP."""

from __future__ import annotations

import textwrap

import pytest

from tests.fuzz.check import check_batch
from tests.fuzz.programs import program_from


def _check(source: str, *shapes, dtype="float64", hvp=True):
    program = program_from(textwrap.dedent(source), shapes, dtype, hvp)
    (outcome,) = check_batch([program])
    assert outcome.status == "passed", str(outcome)


def test_concatenate_gradient_flattens_with_a_parenthesised_size():
    # the driver flattened with c.reshape((a.shape[0] + b.shape[0] * a.shape[1],))
    _check("""
        def f(a, b):
            return np.sum(np.sin(np.concatenate([a, b], axis=0)))
    """, (2, 3), (2, 3))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_concatenate_of_unequal_operands_along_any_axis(axis):
    _check(f"""
        def f(a, b):
            c = np.concatenate([a, np.tanh(a)[{', '.join([':'] * axis + [':1'])}]], axis={axis})
            return c.reshape(-1) * 2.0
    """, (2, 3, 2), (1,))


def test_split_gradient_reassembled_in_another_order():
    _check("""
        def f(a):
            return np.concatenate(np.split(a, [1, 3], axis=1)[::-1], axis=1) ** 2
    """, (2, 4))


def test_stack_of_stacks_is_reshaped_with_the_right_size():
    _check("""
        def f(a):
            v = np.stack([a, a, a], axis=1) * 3
            return np.stack([v, v, v], axis=0)
    """, (2, 3))


def test_im2col_written_in_numpy():
    # shifted slices, stacked on a new axis, reshaped to (N, C*KH*KW, Ho*Wo), then w @ cols
    _check("""
        def f(x, w):
            n, c, h, wd = x.shape
            kh = kw = 2
            ho, wo = h - kh + 1, wd - kw + 1
            patches = [x[:, :, i:i + ho, j:j + wo] for i in range(kh) for j in range(kw)]
            cols = np.stack(patches, axis=2).reshape(n, c * kh * kw, ho * wo)
            return w.reshape(w.shape[0], -1) @ cols
    """, (2, 3, 4, 4), (5, 3, 2, 2))


def test_vector_vector_products():
    _check("""
        def f(a, b):
            return (a @ a) * np.dot(a, b) + np.matmul(b, a)
    """, (3,), (3,))


def test_vector_matrix_and_batched_products():
    _check("""
        def f(a, m, t):
            return np.sum(a @ m) + np.sum(m.T @ a) + np.sum(t @ a) + np.sum(a @ t)
    """, (3,), (3, 3), (2, 3, 3))


def test_negative_step_slices_and_their_gradient():
    _check("""
        def f(a):
            return a[::-1, 3:0:-2] * a[::-1, ::-1][:, 1:3] + np.sum(a[-1:0:-1, ::2] ** 2)
    """, (4, 5), dtype="float32")


def test_mixed_integer_slice_and_array_indexing():
    _check("""
        def f(a):
            b = np.sum(a[[0, 2], :, [1, 0]].T[1:3] ** 2) + np.sum(a[..., [0, -1]][1, 2:, 0])
            return a[3, 2:, [1, 3]] * b
    """, (4, 5, 6))


def test_transpose_with_axes_by_keyword():
    _check("""
        def f(a):
            return np.transpose(a, axes=(2, 0, 1)) * 2.0
    """, (2, 3, 4))


def test_power_of_zero_has_a_zero_second_derivative():
    _check("""
        def f(a):
            return a ** 0.0 + np.abs(a) ** 0.0
    """, (3,))
