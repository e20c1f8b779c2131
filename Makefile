# The two commands: `make test` and `make run`. Everything else is a helper.
# Both create their own virtual environment and install what they need.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# First Python >= 3.11 on PATH, unless PYTHON is given.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
	echo $$p; break; fi; done)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= feed,sim,lambdas,infra,dev
PYTEST_ARGS ?=
ARGS ?=
COVERAGE_FAIL_UNDER ?= 90

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 1
# Keep every AWS SDK call on loopback in tests, sandbox and benchmarks.
export AWS_EC2_METADATA_DISABLED := true

.PHONY: help venv test lint typecheck security unit integration bench run clean lock

help:
	@echo "make test    - install into $(VENV) and run lint, types, security scan and the whole test suite"
	@echo "make run     - run the whole pipeline on this machine against the Kite simulator (ARGS=...)"
	@echo "make bench   - run the benchmarks and rewrite BENCHMARKS.md (ONLY=name to run one)"

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "Python >= 3.11 is required" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	@touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy ticker_core ticker_adapters kite_sim feed_container lambdas sandbox benchmarks tools

security: $(STAMP)
	$(BIN)/bandit -q -c pyproject.toml -r ticker_core ticker_adapters kite_sim feed_container lambdas sandbox
	$(BIN)/python tools/secret_scan.py

test: lint typecheck security
	$(BIN)/python -m pytest --cov --cov-report=term --cov-fail-under=$(COVERAGE_FAIL_UNDER) $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(ONLY)

run: $(STAMP)
	$(BIN)/python -m sandbox $(ARGS)

# Regenerate the pinned constraints from a fresh resolve of pyproject.toml.
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install --quiet -e '.[feed,sim,lambdas,infra,dev]'
	.lockenv/bin/python -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt
	rm -rf .lockenv

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage htmlcov
