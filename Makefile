# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: format test-unit demo share-demo web loadtest-quick loadtest test lint typecheck unit bench fuzz clean test-compose

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,load,dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

## The main job on the embedded default: a private video shared end to end, then a short
## load test comparing the four modes (plain, plain+scan, sealed, post-quantum sealed),
## with its report.
demo: share-demo loadtest-quick

share-demo: $(STAMP)
	$(PY) -m loadtests demo

## The web client on a local stack: prints its URL (open it in two windows that do not share
## cookies, e.g. a normal and a private one) and runs until Ctrl-C.
web: $(STAMP)
	$(PY) -m loadtests web

loadtest-quick: $(STAMP)
	$(PY) -m loadtests run --quick

loadtest: $(STAMP)
	$(PY) -m loadtests run

## Everything CI checks: lint, strict types, the whole test suite.
test: lint typecheck unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

## Format the tree (ruff format, then the fixable lint rules), as CI checks it.
format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest

## Only the pure unit tests (tests/unit: no Redis, no servers): seconds, anywhere.
test-unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit -q

## The container deployment for real: build the image, run the compose stack, share a video
## through nginx (minutes; needs a Docker engine and Compose; offline, first run
## deploy/offline/make-base-images.sh as root for stand-in base images).
test-compose: $(STAMP)
	PDM_COMPOSE_TEST=1 $(VENV)/bin/pytest tests/integration/test_compose_stack.py -v -s

## The rights model against the running services, for as long as you like: the long
## hypothesis profile, on one redis-server and on the cluster (tests/integration/test_rights_stateful.py).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long $(VENV)/bin/pytest tests/integration/test_rights_stateful.py -q -s

## The API contract under a longer fuzz: schemathesis against both services' /openapi.json
## on real servers, all checks and the stateful phase (tests/integration/test_api_fuzz.py; FUZZ_EXAMPLES
## per operation, default 300, and FUZZ_SEED; a few minutes at the default).
.PHONY: fuzz-api
fuzz-api: $(STAMP)
	PDM_FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),300) PDM_FUZZ_SEED=$(or $(FUZZ_SEED),20261201) \
	PDM_FUZZ_TIMEOUT_S=1500 $(VENV)/bin/pytest tests/integration/test_api_fuzz.py -q -o timeout=3600

## make bench B=edge  (edge, dm, sealed, revocation, nginx, front-mix, hosts, matcher, abuse,
## push-render: python -m loadtests.bench lists them)
bench: $(STAMP)
	$(PY) -m loadtests.bench $(or $(B),edge)

clean:
	rm -rf var .mypy_cache .ruff_cache .pytest_cache
