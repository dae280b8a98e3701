# Every target sets itself up from a fresh clone: a local .venv with an editable install.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: test test-all fuzz demo bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# .[mpi] (mpi4py + MPICH) so that the tests launch real `mpiexec -n 2` and `-n 4` jobs
$(VENV)/.stamp-test: pyproject.toml Makefile | $(PY)
	$(PIP) install --quiet -e ".[test,examples,mpi]"
	touch $@

$(VENV)/.stamp-bench: pyproject.toml $(VENV)/.stamp-test
	$(PIP) install --quiet -e ".[test,examples,mpi,bench]"
	touch $@

test: $(VENV)/.stamp-test
	$(PY) -m pytest -q -m "not slow"

test-all: $(VENV)/.stamp-test
	$(PY) -m pytest -q

# A long differential-fuzzing campaign (tests/fuzz/campaign.py); FUZZ_ARGS="--seed 1" etc.
fuzz: $(VENV)/.stamp-test
	$(PY) -m tests.fuzz.campaign $(FUZZ_ARGS)

demo: $(VENV)/.stamp-test
	$(PY) examples/mlp_digits.py

# the timed workloads and compile latency (run.py), then the GRU LM scan step (gru_lm.py:
# steady state, then cold compiles at sequence 8 and 64) and, over MPI, data_parallel.py
bench: $(VENV)/.stamp-bench
	$(PY) benchmarks/run.py
	$(PY) benchmarks/gru_lm.py
	$(PY) benchmarks/gru_lm.py --cold
	$(PY) benchmarks/data_parallel.py

lint: $(VENV)/.stamp-test
	$(PIP) install --quiet ruff
	$(PY) -m ruff check ir compiler runtime tests examples benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
