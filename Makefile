# Two entry points that work on a fresh machine with Python 3.11 and pip:
#   make serve   set up .venv (serving deps only, no torch) and start the service on 127.0.0.1:8000
#   make test    set up .venv (train, dev, batch and ray extras) and run lint, type checks and the whole test suite
#   make reliability  the reliability benchmark (bad inputs, schemathesis, overload, faults, 50k-request soak)
#                     against real uvicorn processes; writes docs/reliability.md, .json and the soak plot
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint typecheck pytest benchmark reliability clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

$(VENV)/.serve-stamp: pyproject.toml | $(PY)
	$(PIP) install -e '.[fast]'
	touch $@

# torch is pinned to the CPU wheel first so that the extra's range never pulls a multi-GB CUDA build.
$(VENV)/.dev-stamp: pyproject.toml | $(PY)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[train,dev,batch,ray,fast]'
	touch $@ $(VENV)/.serve-stamp

serve: $(VENV)/.serve-stamp
	WINGMARK_HOST=$(HOST) WINGMARK_PORT=$(PORT) $(VENV)/bin/wingmark serve

# lint-imports: the layers in pyproject.toml's [tool.importlinter] (model_store < runtime < service | train)
lint: $(VENV)/.dev-stamp
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(VENV)/.dev-stamp
	$(VENV)/bin/mypy

pytest: $(VENV)/.dev-stamp
	OMP_NUM_THREADS=2 $(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# about 8 minutes on 2 cores; writes docs/benchmarks.md, docs/benchmarks.json, docs/img/benchmarks_*.png
benchmark: $(VENV)/.dev-stamp
	$(VENV)/bin/wingmark benchmark $(BENCHMARK_ARGS)

$(VENV)/.reliability-stamp: pyproject.toml $(VENV)/.dev-stamp
	$(PIP) install -e '.[train,dev,batch,ray,fast,reliability]'
	touch $@

# Long (the soak alone is ~15 min on 2 cores); RELIABILITY_ARGS=--sections bad,faults runs a subset.
reliability: $(VENV)/.reliability-stamp
	OMP_NUM_THREADS=1 nice -n 10 $(PY) -m tests.reliability.run $(RELIABILITY_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
