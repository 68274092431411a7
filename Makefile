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

.PHONY: run demo screenshots test test-fast fuzz lint typecheck pytest bench clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# Installing: uv (one wheel, which pip puts into the venv) fetches and unpacks the packages in
# parallel and from its cache; pip alone took most of a cold `make run` (README has the times).
# Where uv cannot be had (no wheel for the platform, no PyPI) or fails, pip does it all.
# Python writes .pyc files on first import, unless PYTHONDONTWRITEBYTECODE is set (as in many
# container images): then uv writes them all at install, as pip always does, or every start of
# `afterword` would compile its imports again (4 s → 15 s). Elsewhere that would only cost time.
UV := $(BIN)/uv
UV_COMPILE := $(if $(PYTHONDONTWRITEBYTECODE),--compile-bytecode)
define install
	@echo "installing $(1) into $(VENV)"
	@if { test -x $(UV) || $(BIN)/python -m pip install --quiet uv; } \
	    && $(UV) pip install --quiet $(UV_COMPILE) --python $(BIN)/python $(1); then :; else \
	  echo "uv did not work here; installing with pip instead (slower)"; \
	  $(BIN)/python -m pip install --quiet --upgrade pip && $(BIN)/python -m pip install --quiet $(1); \
	fi
endef

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Afterword needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(call install,-e .)
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(call install,-e '.[dev]')
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed  ## migrate and serve on SQLite at http://127.0.0.1:8000
	$(BIN)/afterword db upgrade
	$(BIN)/afterword serve

# The demo serves with the channels off: its phone numbers and chat ids are made up, and a bot
# token in .env must not point a real bot's webhook at the demo. The login is printed above.
DEMO_DB := afterword-demo.db
demo: $(VENV)/.installed  ## four months of made-up answers in afterword-demo.db, served at http://127.0.0.1:8000 (login printed)
	$(BIN)/afterword demo --force --database $(DEMO_DB)
	DATABASE_URL=sqlite+aiosqlite:///$(DEMO_DB) TELEGRAM_BOT_TOKEN= TWILIO_AUTH_TOKEN= \
	  $(BIN)/afterword serve --host 127.0.0.1 --port 8000

screenshots: $(VENV)/.installed-dev  ## docs/screenshots/*.png from a fresh demo, in headless chromium
	$(BIN)/python docs/screenshots/take.py

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

fuzz: $(VENV)/.installed-dev  ## random requests to every route (tests/bot/test_fuzz.py), 5,000 a backend instead of CI's 300
	$(PYTEST) --hypothesis-profile=fuzz tests/bot/test_fuzz.py

bench: $(VENV)/.installed-dev  ## benchmarks; writes BENCHMARKS.md
	$(BIN)/python -m bench
	$(BIN)/python -m bench.send_rate --out BENCHMARKS.md
	$(BIN)/python -m bench.body_memory --out BENCHMARKS.md

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
