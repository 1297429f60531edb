# Two commands matter: `make demo` and `make test`. Both create .venv from nothing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The CPU build of torch this machine kind keeps on disk (a plain `torch` from PyPI is a CUDA build of several GB).
TORCH_VERSION ?= 2.13.0

export TF_CPP_MIN_LOG_LEVEL ?= 2
export KERAS_BACKEND ?= tensorflow
export MPLBACKEND ?= Agg

.PHONY: demo test test-backends test-all bench bench-quick table clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench,jax,legacy,hub]' 'torch==$(TORCH_VERSION)'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/autoinit-sym demo

test: $(STAMP)
	$(PY) -m pytest -q tests --ignore=tests/slow

# The backend smoke tier (tests/backends: a dozen models, the API and CLI without TensorFlow)
# on JAX and on torch; `make test` runs it on TensorFlow.
test-backends: $(STAMP)
	KERAS_BACKEND=jax $(PY) -m pytest -q tests/backends
	KERAS_BACKEND=torch $(PY) -m pytest -q tests/backends

test-all: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) tests/benchmarks/run.py

bench-quick: $(STAMP)
	$(PY) tests/benchmarks/run.py --quick

table: $(STAMP)
	$(VENV)/bin/autoinit-sym table --format markdown

clean:
	rm -rf $(VENV) build *.egg-info
