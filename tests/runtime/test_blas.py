"""runtime/blas.py: BLAS held to one thread around a call, and given back after (also after
an error)."""

import pytest

from runtime.blas import blas_thread_controls, with_one_blas_thread


@pytest.fixture
def controls():
    found = blas_thread_controls()
    if found is None:
        pytest.skip("this BLAS has no thread control chainjit knows")
    get, set_ = found
    before = get()
    set_(2)
    yield get, set_
    set_(before)


def test_blas_is_held_to_one_thread_during_the_call_and_given_back(controls):
    get, _ = controls
    seen = []
    assert with_one_blas_thread(lambda x: seen.append(get()) or x)(7) == 7
    assert seen == [1] and get() == 2


def test_blas_threads_are_given_back_after_an_error(controls):
    get, _ = controls
    with pytest.raises(ZeroDivisionError):
        with_one_blas_thread(lambda: 1 / 0)()
    assert get() == 2


def test_one_thread_already_is_left_alone(controls):
    get, set_ = controls
    set_(1)
    assert with_one_blas_thread(get)() == 1 and get() == 1
