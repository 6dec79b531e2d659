# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint typecheck unit bench-edge clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,load,dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

## The main job on the embedded default: a private video shared by pointer, end to end.
demo: $(STAMP)
	$(PY) -m loadtests demo

## Everything CI checks: lint, strict types, the whole test suite.
test: lint typecheck unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest

bench-edge: $(STAMP)
	$(PY) -m loadtests.bench edge

clean:
	rm -rf var .mypy_cache .ruff_cache .pytest_cache
