"""A fixed-seed sample of the differential fuzzer (the long campaign is `make fuzz`): random
NumPy programs, compiled with Numba and with the interpreter, against NumPy and central
finite differences (tests/fuzz/check.py)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.check import check_batch
from tests.fuzz.programs import programs


@settings(max_examples=10, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(st.lists(programs(), min_size=6, max_size=6))
def test_fuzzed_programs_agree_with_numpy_and_the_interpreter(batch):
    failures = [o for o in check_batch(batch) if o.status in ("mismatch", "crash")]
    assert not failures, "\n\n".join(map(str, failures))
