# Two commands do everything on a fresh clone with Python 3.11 and make:
#   make run   – create .venv, install, migrate, serve on SQLite at http://127.0.0.1:8000
#   make test  – create .venv with the dev extras, run ruff, mypy and pytest
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint typecheck pytest bench clean help

help:  ## list the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

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

lint: $(VENV)/.installed-dev  ## ruff format check and lint
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(VENV)/.installed-dev  ## mypy, strict on bot/, flows/, scoring/
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev  ## the test suite
	$(BIN)/pytest

test: lint typecheck pytest  ## everything CI runs

bench: $(VENV)/.installed-dev  ## benchmarks; writes BENCHMARKS.md
	$(BIN)/python -m bench

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
