# dj_cqrs developer commands. `make help` lists them.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install test test-unit test-django61 test-integration compat demo bench lint type docs docs-serve clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

$(STAMP): pyproject.toml setup.py requirements/base.txt requirements/deps.txt requirements/test.txt requirements/test-tools.txt requirements/browser.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/test.txt -e '.[postgres,redis,drf,progress]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv with the package and test tools

# Unit tests that also run on PostgreSQL (set-based statements differ per database).
PG_UNIT_TESTS ?= tests/unit/sync tests/unit/events tests/unit/test_outbox.py tests/unit/master/test_inline_outbox.py tests/unit/master/test_inline_delete.py tests/unit/test_tombstones.py tests/unit/regressions tests/unit/replica tests/unit/observability
# The statements dj_cqrs wraps around Django's own differ per Django version: these run on
# PostgreSQL with Django 6.1 too.
PG_DJ61_TESTS ?= tests/unit/master tests/unit/test_outbox.py tests/unit/regressions/test_master_fidelity.py
PG_UNIT_URL ?= postgres://postgres@127.0.0.1:5432/dj_cqrs_unit_$(notdir $(CURDIR))

# `make test` runs two lanes at once (the integration tests mostly wait on services and
# subprocesses, so the unit passes fit beside them on two cores): lane 1 streams the integration and
# compatibility tests; lane 2 runs the unit passes one after the other (SQLite, PostgreSQL, then
# Django 6.1) into $(UNIT_LANE_LOG), printed when both lanes are done. Either lane failing fails
# `make test`; every pass still runs in full. Each lane uses its own databases and broker names.
UNIT_LANE_LOG ?= .cache/test-unit-lane.log
# Integration tests that run at the end of the unit lane instead (mostly waiting: the one-minute
# database outage; the fuzz test; the supervisor; the three-node cluster), so that both lanes take
# about as long.
IT_UNIT_LANE ?= integration_tests/test_database_outage.py integration_tests/test_fuzz_consumer.py integration_tests/test_supervisor.py integration_tests/test_cluster.py

test: install ## Run every test: integration and compat, and alongside them the unit passes (SQLite, PostgreSQL, Django 6.1)
	@mkdir -p $(dir $(UNIT_LANE_LOG))
	@echo "make test: the unit passes run alongside the integration tests; their output ($(UNIT_LANE_LOG)) follows at the end"
	@status=0; $(MAKE) --no-print-directory -j2 test-lane-integration test-lane-unit || status=$$?; \
	echo "======================= unit passes (ran alongside the integration tests) ======================="; \
	cat $(UNIT_LANE_LOG); \
	if [ $$status -ne 0 ]; then echo "make test: FAILED (see above)" >&2; fi; exit $$status

.PHONY: test-lane-integration test-lane-unit test-unit-passes test-pg-unit
test-lane-integration: install
	$(BIN)/python -m pytest integration_tests $(addprefix --ignore=,$(IT_UNIT_LANE))

test-lane-unit: install
	@$(MAKE) --no-print-directory test-unit-passes > $(UNIT_LANE_LOG) 2>&1

# The unit passes in order: SQLite, the set-based ones on PostgreSQL, then Django 6.1, then the
# integration tests of $(IT_UNIT_LANE). A failing pass does not stop the next ones (all failures
# show in one run); the lane fails if any did.
test-unit-passes:
	@failed=""; \
	echo "== $$(date +%T) unit tests, SQLite"; \
	$(BIN)/python -m pytest tests || failed="$$failed SQLite"; \
	echo "== $$(date +%T) unit tests, PostgreSQL"; \
	$(MAKE) --no-print-directory test-pg-unit || failed="$$failed PostgreSQL"; \
	echo "== $$(date +%T) Django 6.1"; \
	$(MAKE) --no-print-directory test-django61 || failed="$$failed Django-6.1"; \
	echo "== $$(date +%T) integration tests of this lane: $(IT_UNIT_LANE)"; \
	$(BIN)/python -m pytest $(IT_UNIT_LANE) || failed="$$failed integration($(IT_UNIT_LANE))"; \
	echo "== $$(date +%T) unit lane done"; \
	if [ -n "$$failed" ]; then echo "unit lane FAILED:$$failed"; exit 1; fi

test-pg-unit: install
	@if [ -n "$$CI" ] || (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then \
	  DATABASE_URL=$(PG_UNIT_URL) $(BIN)/python -m pytest --create-db -q $(PG_UNIT_TESTS); \
	else echo "PostgreSQL is not reachable on 127.0.0.1:5432: skipping the PostgreSQL unit pass"; fi

test-unit: install ## Unit tests only (no services needed)
	$(BIN)/python -m pytest tests

# The unit suite again on the newest Django (requirements/django61.txt) in a second virtualenv.
# Django 6.1 needs Python 3.12+: pyenv's 3.12 first, then python3.12 or python3.13 on PATH.
DJ61_VENV ?= .venv-dj61
DJ61_BIN := $(DJ61_VENV)/bin
DJ61_STAMP := $(DJ61_VENV)/.installed-stamp
PY312 ?= $(or $(firstword $(wildcard $(PYENV_ROOT)/versions/3.12*/bin/python3.12 $(HOME)/.pyenv/versions/3.12*/bin/python3.12)), \
  $(shell for py in python3.12 python3.13; do "$$py" -c '' 2>/dev/null && command -v "$$py" && break; done))

$(DJ61_STAMP): pyproject.toml setup.py requirements/deps.txt requirements/test-tools.txt requirements/django61.txt
	$(PY312) -m venv $(DJ61_VENV)
	$(DJ61_BIN)/python -m pip install -q --upgrade pip
	$(DJ61_BIN)/python -m pip install -q -r requirements/django61.txt -e '.[postgres,redis,drf,progress]'
	touch $(DJ61_STAMP)

ifneq ($(strip $(PY312)),)
test-django61: $(DJ61_STAMP) ## Unit tests (SQLite) on Django 6.1 in .venv-dj61 (Python 3.12+; without it: skipped, failing under CI=true), then the PostgreSQL-only save-path tests
	$(DJ61_BIN)/python -m pytest tests -q
	@if [ -n "$$CI" ] || (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then \
	  DATABASE_URL=$(PG_UNIT_URL)_dj61 $(DJ61_BIN)/python -m pytest --create-db -q $(PG_DJ61_TESTS); \
	else echo "PostgreSQL is not reachable on 127.0.0.1:5432: skipping the Django 6.1 PostgreSQL tests"; fi
else
test-django61:
	@if [ -n "$$CI" ]; then echo "Python 3.12 not found (pyenv or PATH): cannot run the Django 6.1 unit pass" >&2; exit 1; fi
	@echo "Python 3.12 not found (pyenv or PATH): skipping the Django 6.1 unit pass"
endif

test-integration: install ## Integration and compatibility tests only
	$(BIN)/python -m pytest integration_tests

compat: install ## Mixed-fleet compatibility tests against django-cqrs 3.1.0 (its venv is built once in .cache/)
	$(BIN)/python -m pytest integration_tests/compat

demo: install ## Master → replica end to end on SQLite and a server-less broker
	$(BIN)/python examples/demo.py

demo-web: install ## The same master and replica in a browser (prints the URL; Ctrl+C stops)
	$(BIN)/python examples/demo_web.py $(DEMO_WEB_ARGS)

bench: install ## Benchmarks against django-cqrs 3.1.0 (see bench/README.md)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: install ## ruff, then the import contracts of .importlinter (lint-imports)
	$(BIN)/python -m pip install -q -r requirements/lint.txt
	$(BIN)/ruff check dj_cqrs
	$(BIN)/lint-imports

type: install ## mypy
	$(BIN)/python -m pip install -q -r requirements/lint.txt
	$(BIN)/mypy dj_cqrs

# The documentation site (mkdocs.yml): MkDocs + Material + mkdocstrings, installed into .venv from
# requirements/docs.txt. --strict: a broken link or anchor, a page missing from the nav or an API
# reference that does not resolve fails the build. The site goes to site/ (not committed).
DOCS_STAMP := $(VENV)/.docs-stamp
DOCS_ADDR ?= 127.0.0.1:8000
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs

$(DOCS_STAMP): $(STAMP) requirements/docs.txt
	$(BIN)/python -m pip install -q -r requirements/docs.txt
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP) ## Build the documentation site into site/ (mkdocs build --strict)
	$(MKDOCS) build --strict --site-dir site

docs-serve: $(DOCS_STAMP) ## Serve the documentation site on http://127.0.0.1:8000 (DOCS_ADDR), rebuilt on change; warnings are printed, not fatal
	$(MKDOCS) serve --dev-addr $(DOCS_ADDR)

clean: ## Remove the virtualenvs and caches
	rm -rf $(VENV) $(DJ61_VENV) .cache build dist site *.egg-info .pytest_cache .hypothesis
