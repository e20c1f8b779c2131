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
# make test's workers (pytest-xdist); tests/conftest.py keeps what shares a fixture together.
PYTEST_WORKERS ?= 2
ARGS ?=
COVERAGE_FAIL_UNDER ?= 90

# The CDK CLI (npm's aws-cdk, no dependencies of its own), pinned and installed into the venv.
CDK_CLI_VERSION ?= 2.1148.1
CDK := $(VENV)/cdk-cli/node_modules/.bin/cdk
CDK_STAMP := $(VENV)/cdk-cli/.installed-$(CDK_CLI_VERSION)
STAGE ?= dev

export PIP_DISABLE_PIP_VERSION_CHECK := 1
# jsii prints an end-of-life banner on Node 20 unless this names the running Node major.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := $(shell node -p 'process.versions.node.split(".")[0]' 2>/dev/null)
# The CDK CLI: no telemetry, no update check, no notices fetched (synth stays offline).
export CDK_DISABLE_CLI_TELEMETRY := true
export CDK_DISABLE_VERSION_CHECK := true
# Keep every AWS SDK call on loopback in tests, sandbox and benchmarks.
export AWS_EC2_METADATA_DISABLED := true

.PHONY: help venv test lint typecheck security unit integration bench run clean lock synth cdk-cli deploy

help:
	@echo "make test    - install into $(VENV) and run lint, types, security scan and the whole test suite"
	@echo "make run     - run the whole pipeline on this machine against the Kite simulator (ARGS=...)"
	@echo "make bench   - run the benchmarks and rewrite BENCHMARKS.md (ONLY=name to run one)"
	@echo "make synth   - cdk synth STAGE=dev|prod into cdk.out (offline, no Docker), cfn-lint, cdk-nag"
	@echo "make deploy  - make synth, then cdk deploy STAGE (AWS credentials and Docker needed)"

# setup.py and the C source: the editable install compiles feed_container/_recordfmt.c.
$(STAMP): pyproject.toml constraints.txt setup.py feed_container/_recordfmt.c
	@test -n "$(PYTHON)" || { echo "Python >= 3.11 is required" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	@touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache architecture.ini

typecheck: $(STAMP)
	$(BIN)/mypy ticker_core ticker_adapters kite_sim feed_container lambdas sandbox testkit benchmarks tools infra app.py

security: $(STAMP)
	$(BIN)/bandit -q -c pyproject.toml -r ticker_core ticker_adapters kite_sim feed_container lambdas sandbox infra app.py
	$(BIN)/python tools/secret_scan.py

test: lint typecheck security
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadscope \
		--cov --cov-report=term --cov-fail-under=$(COVERAGE_FAIL_UNDER) $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(ONLY)

run: $(STAMP)
	$(BIN)/python -m sandbox $(ARGS)

$(CDK_STAMP):
	npm install --prefix $(VENV)/cdk-cli --no-save --no-audit --no-fund --loglevel=error aws-cdk@$(CDK_CLI_VERSION)
	@touch $@

cdk-cli: $(CDK_STAMP)

# cdk synth for STAGE (the app builds each function's asset with pip, no Docker; cdk-nag's
# AwsSolutions and Serverless packs run as validation plugins and fail the synth on any
# unacknowledged finding), then cfn-lint on the template (infra/lint.py lists the checks
# left out, with the reasons).
synth: $(STAMP) $(CDK_STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(CDK) synth --quiet --no-notices --no-version-reporting -c stage=$(STAGE)
	$(BIN)/python -m infra.lint cdk.out/TickerService-$(STAGE).template.json

# cdk deploy STAGE from the assembly `make synth` just checked (needs AWS credentials and a
# Docker engine with buildx for the two arm64 images; see README, deploying).
deploy: synth
	PATH="$(abspath $(BIN)):$$PATH" $(CDK) deploy --app cdk.out --no-notices TickerService-$(STAGE) $(ARGS)

# Regenerate the pinned constraints from a fresh resolve of pyproject.toml.
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install --quiet -e '.[feed,sim,lambdas,infra,dev]'
	.lockenv/bin/python -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt
	rm -rf .lockenv

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage htmlcov cdk.out build
