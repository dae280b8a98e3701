"""Test-session set-up: one Numba/chainjit cache folder shared by the whole session (so each
kernel compiles once per run), compiled code from the first call, and a derandomized
hypothesis profile for CI."""

import os
import tempfile

_CACHE = os.environ.get("CHAINJIT_TEST_CACHE") or tempfile.mkdtemp(prefix="chainjit-test-cache-")
os.environ.setdefault("CHAINJIT_CACHE_DIR", _CACHE)
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(_CACHE, "numba"))
# Tests compare compiled code against the interpreter: a train step must not answer its first
# calls on the interpreter while it compiles (runtime/execution/background.py). The tests of
# that path ask for it with wait=False.
os.environ.setdefault("CHAINJIT_WAIT", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
