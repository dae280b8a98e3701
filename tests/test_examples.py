"""Every script in examples/ runs to completion in quick mode (CHAINJIT_QUICK=1 / --quick).

Each runs in a subprocess, as a user would run it, sharing the session's Numba cache folder
(tests/conftest.py). The CNN and the character models run on the reference interpreter
here: their quick modes are a few steps, and a cold Numba compile of their whole training
steps (35 s and minutes on these machines) would cost more than the rest of the test suite;
mlp_digits.py and ir_tour.py cover the Numba path end to end.
"""

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
BACKEND = {"char_transformer.py": "interpreter", "cnn_digits.py": "interpreter",
           "char_rnn.py": "interpreter"}  # scan's Numba path: tests/compiler/test_loops.py
# What each example must print (beyond exiting with status 0).
EXPECTED = {
    "mlp_digits.py": ["test accuracy:", "where to look next"],
    "cnn_digits.py": ["test accuracy:"],
    "char_transformer.py": ["unigram entropy", "sample:"],
    "char_rnn.py": ["unigram entropy", "sample:"],
    "ir_tour.py": ["== traced", "== joint", "== optimized", "== fused"],
}


def test_every_example_is_listed():
    assert set(EXPECTED) <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_in_quick_mode(script):
    # the tree under test first, not whichever checkout the venv's editable install names
    path = os.pathsep.join(filter(None, [str(EXAMPLES.parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "CHAINJIT_QUICK": "1", "PYTHONPATH": path}
    if script in BACKEND:
        env["CHAINJIT_BACKEND"] = BACKEND[script]
    command = [sys.executable, str(EXAMPLES / script), "--quick"]
    result = subprocess.run(command, env=env, check=False,
                            capture_output=True, text=True, timeout=300, cwd=EXAMPLES.parent)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    for text in EXPECTED.get(script, []):
        assert text in result.stdout
