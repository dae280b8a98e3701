"""runtime/execution/blas.py: BLAS held to one thread around a call, and given back after (also
after an error)."""

import pytest

from runtime.execution.blas import blas_thread_controls, with_one_blas_thread


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


# -- Adaptive: all threads while that is fast, one thread while a core is taken --------------
class _Clock:
    """A fake perf_counter, advanced by the fake driver: `wide` / `narrow` seconds a call."""

    def __init__(self, monkeypatch):
        import runtime.execution.blas as blas

        self.now = 0.0
        self.narrow_now = False
        self.cost = {"wide": 1.0, "narrow": 2.0}
        self.modes = []
        monkeypatch.setattr(blas.time, "perf_counter", lambda: self.now)

    def driver(self, x):
        mode = "narrow" if self.narrow_now else "wide"
        self.modes.append(mode)
        self.now += self.cost[mode]
        return x

    def narrow(self):
        clock = self

        class Narrow:
            def __enter__(self):
                clock.narrow_now = True

            def __exit__(self, *exc):
                clock.narrow_now = False

        return Narrow()


def test_adaptive_stays_wide_while_wide_is_faster_and_tries_narrow_ever_less(monkeypatch):
    from runtime.execution.blas import FIRST_WAIT, Adaptive

    clock = _Clock(monkeypatch)
    call = Adaptive(clock.driver, clock.narrow())
    assert [call(k) for k in range(1000)] == list(range(1000))
    narrow = [k for k, m in enumerate(clock.modes) if m == "narrow"]
    assert call.current == "wide" and call.switches == 0
    assert 3 <= len(narrow) <= 3 + 6  # the first three, then tries at doubling waits
    assert narrow[4] - narrow[3] > FIRST_WAIT


def test_adaptive_goes_narrow_on_a_stall_and_back_when_the_core_returns(monkeypatch):
    from runtime.execution.blas import Adaptive

    clock = _Clock(monkeypatch)
    call = Adaptive(clock.driver, clock.narrow())
    for k in range(20):
        call(k)
    assert call.current == "wide"
    clock.cost["wide"] = 30.0  # another process takes a core: two-thread calls stall
    call(0)
    assert call.current == "narrow"  # at the first stall
    for k in range(300):
        call(k)
    modes = clock.modes[-300:]
    assert modes.count("wide") <= 5 and call.current == "narrow"
    clock.cost["wide"] = 1.0  # the core is back
    for k in range(600):
        call(k)
    assert call.current == "wide"
    assert clock.modes[-50:].count("wide") >= 45


def test_adaptive_picks_narrow_when_the_machine_is_busy_from_the_start(monkeypatch):
    from runtime.execution.blas import Adaptive

    clock = _Clock(monkeypatch)
    clock.cost["wide"] = 20.0
    call = Adaptive(clock.driver, clock.narrow())
    for k in range(100):
        call(k)
    assert call.current == "narrow" and clock.modes[-90:].count("wide") <= 4


def test_adaptive_narrow_runs_numba_regions_on_one_thread():
    import numba

    from runtime.execution.blas import adaptive_threads

    seen = []
    call = adaptive_threads(lambda: seen.append(numba.get_num_threads()), pooled=True)
    before = numba.get_num_threads()
    for _ in range(6):  # three of each mode first
        call()
    assert sorted(set(seen)) == sorted({1, before}) and numba.get_num_threads() == before


def test_large_drivers_are_adaptive_small_ones_are_not():
    import numpy as np

    from compiler import compile
    from runtime.execution.blas import Adaptive

    small = compile(lambda a, b: a @ b)
    a = np.ones((8, 8), np.float32)
    small(a, a)
    big = compile(lambda a, b: a @ b)
    c = np.ones((256, 256), np.float32)
    np.testing.assert_allclose(big(c, c), c @ c)
    assert not isinstance(small.trace(a, a).executable.call_driver, Adaptive)
    assert isinstance(big.trace(c, c).executable.call_driver, Adaptive)


def test_adaptive_can_be_turned_off(monkeypatch):
    from runtime.execution.blas import adaptive_threads

    driver = lambda: None  # noqa: E731
    monkeypatch.setenv("CHAINJIT_ADAPTIVE", "0")
    assert adaptive_threads(driver, pooled=False) is driver
    monkeypatch.delenv("CHAINJIT_ADAPTIVE")
    assert adaptive_threads(driver, pooled=True) is not driver
