# Two commands do everything on a fresh clone with Python 3.11 and make:
#   make run        – create .venv, install, migrate, serve on SQLite at http://127.0.0.1:8000
#   make test       – create .venv with the dev extras, run ruff, deptry, mypy and every test
# and one is the edit loop:
#   make test-fast  – the tests on SQLite without server processes or the browser, under a minute
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin

# Tests run on every core (pytest-xdist); `worksteal` moves waiting tests to an idle worker.
PYTEST := $(BIN)/pytest -n auto --dist worksteal

.PHONY: run test test-fast lint typecheck pytest bench clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Afterword needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed  ## migrate and serve on SQLite at http://127.0.0.1:8000
	$(BIN)/afterword db upgrade
	$(BIN)/afterword serve

lint: $(VENV)/.installed-dev  ## ruff format check and lint; deptry: imports match the declared dependencies
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/deptry .
	$(BIN)/deptry . --exclude '\.venv|\.git|test-output|bench/results' --ignore DEP002,DEP004

typecheck: $(VENV)/.installed-dev  ## mypy, strict on bot/, flows/, scoring/
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev  ## every test: both backends (with AFTERWORD_TEST_DATABASE_URL), browser, workers
	$(PYTEST) --hypothesis-profile=ci

test: lint typecheck pytest  ## everything CI runs

test-fast: $(VENV)/.installed-dev  ## the edit loop: SQLite only, no server processes or browser, few Hypothesis examples
	$(PYTEST) --hypothesis-profile=dev -m 'not slow and not postgres'

bench: $(VENV)/.installed-dev  ## benchmarks; writes BENCHMARKS.md
	$(BIN)/python -m bench

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
