# dj_cqrs developer commands. `make help` lists them.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install test test-unit test-integration compat demo bench lint type clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

$(STAMP): pyproject.toml setup.py requirements/base.txt requirements/test.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/test.txt -e '.[postgres,redis,drf,progress]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv with the package and test tools

# Unit tests that also run on PostgreSQL (set-based statements differ per database).
PG_UNIT_TESTS ?= tests/unit/sync tests/unit/test_outbox.py tests/unit/test_tombstones.py tests/unit/regressions tests/unit/replica
PG_UNIT_URL ?= postgres://postgres@127.0.0.1:5432/dj_cqrs_unit_$(notdir $(CURDIR))

test: install ## Run every test: unit (SQLite, then the set-based ones on PostgreSQL) + integration and compat
	$(BIN)/python -m pytest tests integration_tests
	@if [ -n "$$CI" ] || (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then \
	  DATABASE_URL=$(PG_UNIT_URL) $(BIN)/python -m pytest --create-db -q $(PG_UNIT_TESTS); \
	else echo "PostgreSQL is not reachable on 127.0.0.1:5432: skipping the PostgreSQL unit pass"; fi

test-unit: install ## Unit tests only (no services needed)
	$(BIN)/python -m pytest tests

test-integration: install ## Integration and compatibility tests only
	$(BIN)/python -m pytest integration_tests

compat: install ## Mixed-fleet compatibility tests against django-cqrs 3.1.0 (its venv is built once in .cache/)
	$(BIN)/python -m pytest integration_tests/compat

demo: install ## Master → replica end to end on SQLite and a server-less broker
	$(BIN)/python examples/demo.py

bench: install ## Benchmarks against django-cqrs 3.1.0 (see bench/README.md)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: install ## ruff
	$(BIN)/python -m pip install -q -r requirements/lint.txt
	$(BIN)/ruff check dj_cqrs

type: install ## mypy
	$(BIN)/python -m pip install -q -r requirements/lint.txt
	$(BIN)/mypy dj_cqrs

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .cache build dist *.egg-info .pytest_cache .hypothesis
